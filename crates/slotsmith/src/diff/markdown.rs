//! The release diff as Markdown for people: a summary, then one section per
//! area, each change in a table. Every string that comes from a build
//! (paths inside images, versions, command lines, approvers) is escaped with
//! `slotsmith_yaml::escape::shown` and then for Markdown, so a hostile file
//! name can neither spoof the terminal nor the rendered table.

use std::fmt::Write as _;

use slotsmith_yaml::escape::shown;

use super::files::FileInfo;
use super::Diff;

/// An untrusted string for a Markdown table cell: control characters and
/// bidi overrides escaped, then the characters Markdown or HTML would act on.
pub fn cell(s: &str) -> String {
    let mut out = String::new();
    for c in shown(s).chars() {
        match c {
            '\\' | '|' | '`' | '*' | '_' | '[' | ']' | '#' => {
                out.push('\\');
                out.push(c);
            }
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            _ => out.push(c),
        }
    }
    out
}

fn opt(s: &Option<String>) -> String {
    s.as_deref().map(cell).unwrap_or_else(|| "(none)".into())
}

fn entry(i: &FileInfo) -> String {
    let mut s = format!("{} {} {}", i.kind, i.mode, cell(&i.owner));
    if let Some(n) = i.size {
        let _ = write!(s, ", {n} bytes");
    }
    if let Some(h) = &i.sha256 {
        let _ = write!(s, ", sha256 {}", cell(h));
    }
    if let Some(t) = &i.target {
        let _ = write!(s, " -> {}", cell(t));
    }
    s
}

/// Renders the report.
pub fn to_markdown(d: &Diff) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Release diff: {} {} -> {} {}\n",
        cell(&d.old.image),
        cell(&d.old.version),
        cell(&d.new.image),
        cell(&d.new.version)
    );
    if !d.differs {
        s.push_str("No differences: the two builds are the same release.\n");
        return s;
    }
    let count = |n: usize| {
        if n == 0 {
            "no change".to_string()
        } else {
            format!("{n} changes")
        }
    };
    let _ = writeln!(s, "| Area | Changes |\n|---|---|");
    let r = &d.release;
    let _ = writeln!(s, "| Release facts | {} |", count(r.fields.len()));
    let _ = writeln!(s, "| Kernel command line | {} |", count(r.cmdline.len()));
    let _ = writeln!(s, "| Keys and certificates | {} |", count(r.keys.len()));
    match &d.packages {
        Some(p) => {
            let _ = writeln!(
                s,
                "| Packages | {} added, {} removed, {} changed |",
                p.added.len(),
                p.removed.len(),
                p.changed.len()
            );
        }
        None => s.push_str("| Packages | no dpkg database in either image |\n"),
    }
    let f = &d.files;
    let _ = writeln!(
        s,
        "| Rootfs files | {} added, {} removed, {} changed |",
        f.added.len(),
        f.removed.len(),
        f.changed.len()
    );
    match &d.policy {
        Some(p) => {
            let _ = writeln!(
                s,
                "| Policy rules | {} added, {} removed, {} changed |\n| Waivers | {} added, {} removed, {} changed |",
                p.rules_added.len(),
                p.rules_removed.len(),
                p.rules_changed.len(),
                p.waivers_added.len(),
                p.waivers_removed.len(),
                p.waivers_changed.len()
            );
        }
        None => s.push_str("| Policy | neither build has policies |\n"),
    }

    if !r.fields.is_empty() {
        s.push_str("\n## Release facts\n\n| Fact | Old | New |\n|---|---|---|\n");
        for c in &r.fields {
            let _ = writeln!(
                s,
                "| {} | {} | {} |",
                cell(&c.field),
                opt(&c.old),
                opt(&c.new)
            );
        }
    }
    if !r.cmdline.is_empty() {
        s.push_str("\n## Kernel command line\n\n| Slot | Added | Removed | New line |\n|---|---|---|---|\n");
        for c in &r.cmdline {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                cell(&c.slot),
                cell(&c.added.join(" ")),
                cell(&c.removed.join(" ")),
                opt(&c.new)
            );
        }
    }
    if !r.keys.is_empty() {
        s.push_str("\n## Keys and certificates\n\n| File | Role | Old fingerprint | New fingerprint |\n|---|---|---|---|\n");
        for k in &r.keys {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                cell(&k.file),
                cell(&k.role),
                opt(&k.old),
                opt(&k.new)
            );
        }
    }
    if let Some(p) = d.packages.as_ref().filter(|p| !p.is_empty()) {
        s.push_str("\n## Packages\n\n| Package | Change | Old | New |\n|---|---|---|---|\n");
        for a in &p.added {
            let _ = writeln!(
                s,
                "| {} | added | | {} |",
                cell(&a.package),
                cell(&a.version)
            );
        }
        for a in &p.removed {
            let _ = writeln!(
                s,
                "| {} | removed | {} | |",
                cell(&a.package),
                cell(&a.version)
            );
        }
        for c in &p.changed {
            let _ = writeln!(
                s,
                "| {} | changed | {} | {} |",
                cell(&c.package),
                cell(&c.old),
                cell(&c.new)
            );
        }
    }
    if !f.is_empty() {
        s.push_str("\n## Rootfs files\n\n| Path | Change | Old | New |\n|---|---|---|---|\n");
        for a in &f.added {
            let _ = writeln!(s, "| {} | added | | {} |", cell(&a.path), entry(&a.info));
        }
        for a in &f.removed {
            let _ = writeln!(s, "| {} | removed | {} | |", cell(&a.path), entry(&a.info));
        }
        for c in &f.changed {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                cell(&c.path),
                c.what.join(", "),
                entry(&c.old),
                entry(&c.new)
            );
        }
    }
    if let Some(p) = d.policy.as_ref().filter(|p| !p.is_empty()) {
        s.push_str("\n## Policy\n\n");
        if let Some((o, n)) = &p.policy_set {
            let _ = writeln!(s, "Policy set sha256: {} -> {}\n", opt(o), opt(n));
        }
        if !(p.rules_added.is_empty() && p.rules_removed.is_empty() && p.rules_changed.is_empty()) {
            s.push_str("| Rule | Change | Old status | New status |\n|---|---|---|---|\n");
            for a in &p.rules_added {
                let _ = writeln!(s, "| {} | added | | {} |", cell(&a.id), cell(&a.status));
            }
            for a in &p.rules_removed {
                let _ = writeln!(s, "| {} | removed | {} | |", cell(&a.id), cell(&a.status));
            }
            for c in &p.rules_changed {
                let _ = writeln!(
                    s,
                    "| {} | status | {} | {} |",
                    cell(&c.id),
                    cell(&c.old),
                    cell(&c.new)
                );
            }
            s.push('\n');
        }
        let waiver = |w: &super::policy::Waiver| {
            format!(
                "approved by {}{}: {}",
                cell(&w.approver),
                if w.applied { "" } else { " (not applied)" },
                cell(&w.justification)
            )
        };
        if !(p.waivers_added.is_empty()
            && p.waivers_removed.is_empty()
            && p.waivers_changed.is_empty())
        {
            s.push_str("| Waiver for | Change | Old | New |\n|---|---|---|---|\n");
            for w in &p.waivers_added {
                let _ = writeln!(s, "| {} | added | | {} |", cell(&w.rule), waiver(w));
            }
            for w in &p.waivers_removed {
                let _ = writeln!(s, "| {} | removed | {} | |", cell(&w.rule), waiver(w));
            }
            for c in &p.waivers_changed {
                let _ = writeln!(
                    s,
                    "| {} | changed | {} | {} |",
                    cell(&c.rule),
                    waiver(&c.old),
                    waiver(&c.new)
                );
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::files::{FilesDiff, OneSide};
    use crate::diff::{BuildId, Diff, SCHEMA};

    #[test]
    fn hostile_paths_are_escaped_and_an_identical_pair_says_so() {
        let info = FileInfo {
            kind: "file",
            mode: "0644".into(),
            owner: "0:0".into(),
            size: Some(1),
            sha256: Some("ab".into()),
            target: None,
        };
        let id = BuildId {
            image: "x".into(),
            version: "1".into(),
        };
        let mut d = Diff {
            schema: SCHEMA,
            old: id.clone(),
            new: id,
            differs: false,
            release: Default::default(),
            packages: None,
            files: FilesDiff::default(),
            policy: None,
        };
        assert!(to_markdown(&d).contains("No differences"));
        d.differs = true;
        d.files.added.push(OneSide {
            path: "/etc/a|b\x1b[31m\u{202e}<x>".into(),
            info,
        });
        let md = to_markdown(&d);
        assert!(!md.contains('\x1b') && !md.contains('\u{202e}'), "{md}");
        assert!(md.contains("a\\|b"), "{md}");
        assert!(md.contains("&lt;x&gt;"), "{md}");
        assert!(
            md.contains("| Rootfs files | 1 added, 0 removed, 0 changed |"),
            "{md}"
        );
    }
}
