//! The layer directory: `layers/<name>/conf/layer.yaml` (collection,
//! priority, dependencies, declared entries, the remove list) and the
//! `files/` tree beside it, into a [`LayerSpec`].
//!
//! The conf is read from text ([`parse_layer`]); the one walk of `files/`
//! is [`walk_files`], which never follows a symlink. Declared attributes
//! are merged into what the walk found without touching the disk again.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_norway::Value;
use slotsmith_rootfs::path::RelPath;

use super::util::{display_path, hash_file, valid_dir_name};
use crate::diag::Diagnostics;
use crate::spec::*;
use crate::yaml::{join_key, Doc, Reader};

const LAYER_KEYS: &[&str] = &[
    "collection",
    "priority",
    "version",
    "depends",
    "series-compat",
    "description",
    "files",
    "remove",
];
const ENTRY_KEYS: &[&str] = &[
    "type", "mode", "owner", "group", "xattrs", "target", "major", "minor",
];

/// Declared `files:` entries by path (without the leading `/`): the key
/// path for diagnostics and the raw value.
type Declared<'v> = BTreeMap<String, (String, &'v Value)>;

/// Loads one layer: its `conf/layer.yaml` and its `files/` tree.
pub fn load_layer(
    root: &Path,
    name: &str,
    dir: &Path,
    conf: &Path,
) -> Result<LayerSpec, Diagnostics> {
    let shown = display_path(root, conf);
    let text = super::read_text(conf, &shown)?;
    parse_layer(root, name, dir, &shown, &text)
}

/// Parses the text of a layer's `conf/layer.yaml`, shown as `shown`, and
/// reads the layer's `files/` tree under `dir`: all of [`load_layer`] but
/// reading the conf file, so tests and fuzzers can give text directly.
pub fn parse_layer(
    root: &Path,
    name: &str,
    dir: &Path,
    shown: &str,
    text: &str,
) -> Result<LayerSpec, Diagnostics> {
    let doc = Doc::parse(Path::new(shown), text)?;
    let mut r = Reader::new(&doc);
    let layer = read_layer(&mut r, root, name, dir);
    r.diags.into_result(())?;
    let mut layer = layer.ok_or_else(Diagnostics::default)?;
    layer.conf = std::sync::Arc::new(doc);
    Ok(layer)
}

/// Reads the conf document and merges it with the `files/` tree; `None`
/// when a required key is bad (the reasons are in `r.diags`).
fn read_layer(r: &mut Reader<'_>, root: &Path, name: &str, dir: &Path) -> Option<LayerSpec> {
    let doc = r.doc;
    let mut m = r.map("", &doc.value, LAYER_KEYS)?;
    let collection: Option<String> = r.req(&mut m, "collection");
    if let Some(c) = &collection {
        if !valid_dir_name(c) {
            r.error(
                "collection",
                format!("'{c}' is not a collection name (A-Z, a-z, 0-9, '.', '_', '-')"),
            );
        }
    }
    let priority: Option<i64> = r.req(&mut m, "priority");
    let version: Option<u32> = r.opt(&mut m, "version");
    let depends_raw: Vec<String> = r.opt(&mut m, "depends").unwrap_or_default();
    let mut depends = Vec::new();
    for (i, d) in depends_raw.iter().enumerate() {
        // Yocto's LAYERDEPENDS syntax: "name" or "name:version".
        let (n, v) = match d.split_once(':') {
            Some((n, v)) => match v.parse::<u32>() {
                Ok(v) => (n, Some(v)),
                Err(_) => {
                    r.error(
                        &format!("depends[{i}]"),
                        format!("'{d}': the version after ':' must be a number"),
                    );
                    continue;
                }
            },
            None => (d.as_str(), None),
        };
        depends.push((n.to_string(), v));
    }
    let series_compat: Vec<String> = r.req(&mut m, "series-compat").unwrap_or_default();
    if m.has("series-compat") && !series_compat.iter().any(|s| s == SERIES) {
        r.error(
            "series-compat",
            format!(
                "layer is compatible with series [{}], but this slotsmith is series '{SERIES}'",
                series_compat.join(", ")
            ),
        );
    }
    let _: Option<String> = r.opt(&mut m, "description");
    // Declared entries: attributes for files in files/, or nodes git cannot hold.
    let mut declared: Declared<'_> = BTreeMap::new();
    if let Some(v) = r.raw(&mut m, "files") {
        if let Some(fm) = r.map("files", v, &[]) {
            for k in fm.keys() {
                let key = join_key("files", &k);
                match RelPath::parse(&k) {
                    Ok(p) if !p.as_str().is_empty() && k.starts_with('/') => {
                        let v = v
                            .as_mapping()
                            .and_then(|mm| mm.get(k.as_str()))
                            .unwrap_or(&Value::Null);
                        declared.insert(p.as_str().to_string(), (key, v));
                    }
                    Ok(_) => r.key_error(&key, "paths must be absolute, such as /etc/motd"),
                    Err(e) => r.key_error(&key, format!("{e:#}")),
                }
            }
        }
    }
    let mut remove = Vec::new();
    let mut remove_at = BTreeMap::new();
    let remove_raw: Vec<String> = r.opt(&mut m, "remove").unwrap_or_default();
    for (i, p) in remove_raw.iter().enumerate() {
        match RelPath::parse(p) {
            Ok(rp) if p.starts_with('/') && !rp.as_str().is_empty() => {
                let path = format!("/{}", rp.as_str());
                remove_at
                    .entry(path.clone())
                    .or_insert_with(|| Origin(Some(doc.diag(&format!("remove[{i}]"), ""))));
                remove.push(path)
            }
            Ok(_) => r.error(
                &format!("remove[{i}]"),
                "paths must be absolute and not the root",
            ),
            Err(e) => r.error(&format!("remove[{i}]"), format!("{e:#}")),
        }
    }
    remove.sort();
    remove.dedup();
    r.finish(m);

    let walked = walk_files(r, root, dir);
    let entries = merge_declared(r, walked, declared);
    Some(LayerSpec {
        name: name.to_string(),
        dir: display_path(root, dir),
        collection: collection?,
        priority: priority?,
        version,
        depends,
        series_compat,
        entries,
        remove,
        remove_at,
        conf: std::sync::Arc::new(Doc::empty()),
    })
}

/// Walks `files/` without following symlinks. Git keeps only the
/// executable bit, so every file is 0644 or 0755 and every entry is owned
/// by root until [`merge_declared`] applies what `conf/layer.yaml` says.
/// Problems are reported on the layer file, without a key.
fn walk_files(r: &mut Reader<'_>, root: &Path, dir: &Path) -> Vec<LayerEntry> {
    let files = dir.join("files");
    let mut entries = Vec::new();
    if !files.is_dir() {
        return entries;
    }
    for e in walkdir::WalkDir::new(&files)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
    {
        let e = match e {
            Ok(e) => e,
            Err(err) => {
                r.error(
                    "",
                    format!(
                        "cannot walk {}: {err}",
                        slotsmith_yaml::escape::shown(&display_path(root, &files))
                    ),
                );
                continue;
            }
        };
        let rel = e.path().strip_prefix(&files).unwrap_or(e.path());
        let rel_s = rel.to_string_lossy();
        let path = match RelPath::parse(&rel_s) {
            Ok(p) => p,
            Err(err) => {
                r.error(
                    "",
                    format!(
                        "layer file {}: {err:#}",
                        slotsmith_yaml::escape::shown(&display_path(root, e.path()))
                    ),
                );
                continue;
            }
        };
        let shown = display_path(root, e.path());
        let md = match e.path().symlink_metadata() {
            Ok(md) => md,
            Err(err) => {
                r.error("", format!("cannot stat {shown}: {err}"));
                continue;
            }
        };
        let ft = md.file_type();
        let (kind, mode) = if ft.is_symlink() {
            match fs::read_link(e.path()) {
                Ok(t) => (
                    LayerEntryKind::Symlink {
                        target: t.to_string_lossy().into_owned(),
                    },
                    0o777,
                ),
                Err(err) => {
                    r.error("", format!("cannot read link {shown}: {err}"));
                    continue;
                }
            }
        } else if ft.is_dir() {
            (LayerEntryKind::Directory, 0o755)
        } else if ft.is_file() {
            match hash_file(e.path()) {
                Ok((sha256, size)) => {
                    let mode = if md.permissions().mode() & 0o111 != 0 {
                        0o755
                    } else {
                        0o644
                    };
                    (
                        LayerEntryKind::File {
                            source: shown.clone(),
                            sha256,
                            size,
                        },
                        mode,
                    )
                }
                Err(err) => {
                    r.error("", format!("cannot read {shown}: {err}"));
                    continue;
                }
            }
        } else {
            r.error("", format!("{shown}: only files, directories and symlinks belong in files/; declare devices and fifos in conf/layer.yaml"));
            continue;
        };
        entries.push(LayerEntry {
            path: format!("/{}", path.as_str()),
            kind,
            mode,
            uid: 0,
            gid: 0,
            xattrs: BTreeMap::new(),
        });
    }
    entries
}

/// Applies the declared attributes to the walked entries, and adds the
/// declared entries with no file in `files/` (they must say what they are).
/// Reads nothing from disk: the result is sorted by path.
fn merge_declared(
    r: &mut Reader<'_>,
    mut entries: Vec<LayerEntry>,
    mut declared: Declared<'_>,
) -> Vec<LayerEntry> {
    for entry in &mut entries {
        let rel = entry.path.strip_prefix('/').unwrap_or(&entry.path);
        if let Some((key, v)) = declared.remove(rel) {
            apply_declared(r, &key, v, entry, true);
        }
    }
    for (path, (key, v)) in declared {
        let mut entry = LayerEntry {
            path: format!("/{path}"),
            kind: LayerEntryKind::Directory,
            mode: 0o755,
            uid: 0,
            gid: 0,
            xattrs: BTreeMap::new(),
        };
        if apply_declared(r, &key, v, &mut entry, false) {
            entries.push(entry);
        }
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    entries
}

/// Applies a `files:` entry. `exists` tells whether files/ holds the path.
fn apply_declared(
    r: &mut Reader<'_>,
    key: &str,
    v: &Value,
    entry: &mut LayerEntry,
    exists: bool,
) -> bool {
    let Some(mut m) = r.map(key, v, ENTRY_KEYS) else {
        return false;
    };
    let ty: Option<String> = r.opt(&mut m, "type");
    let major: Option<u32> = r.opt(&mut m, "major");
    let minor: Option<u32> = r.opt(&mut m, "minor");
    let target: Option<String> = r.opt(&mut m, "target");
    let mut ok = true;
    match (exists, ty.as_deref()) {
        (true, Some(_)) => {
            r.error(
                &join_key(key, "type"),
                "the path exists in files/, so its type comes from there",
            );
            ok = false;
        }
        (true, None) => {}
        (false, None) => {
            r.error(key, "no such path in files/; add the file or give a 'type' (directory, symlink, char, block, fifo)");
            ok = false;
        }
        (false, Some(t)) => {
            entry.kind = match t {
                "directory" => LayerEntryKind::Directory,
                "fifo" => LayerEntryKind::Fifo,
                "symlink" => match &target {
                    Some(t) if !t.is_empty() => LayerEntryKind::Symlink { target: t.clone() },
                    _ => {
                        r.error(key, "a symlink needs a 'target'");
                        ok = false;
                        LayerEntryKind::Fifo
                    }
                },
                "char" | "block" => match (major, minor) {
                    (Some(major), Some(minor)) if t == "char" => {
                        LayerEntryKind::Char { major, minor }
                    }
                    (Some(major), Some(minor)) => LayerEntryKind::Block { major, minor },
                    _ => {
                        r.error(key, "a device needs 'major' and 'minor'");
                        ok = false;
                        LayerEntryKind::Fifo
                    }
                },
                other => {
                    r.error(&join_key(key, "type"), format!("unknown type '{other}' (expected directory, symlink, char, block or fifo)"));
                    ok = false;
                    LayerEntryKind::Fifo
                }
            };
            entry.mode = match entry.kind {
                LayerEntryKind::Symlink { .. } => 0o777,
                LayerEntryKind::Directory => 0o755,
                _ => 0o644,
            };
        }
    }
    if target.is_some() && !matches!(entry.kind, LayerEntryKind::Symlink { .. }) {
        r.error(&join_key(key, "target"), "only a symlink has a target");
    }
    if (major.is_some() || minor.is_some())
        && !matches!(
            entry.kind,
            LayerEntryKind::Char { .. } | LayerEntryKind::Block { .. }
        )
    {
        r.error(key, "only a device has major and minor numbers");
    }
    if let Some(raw) = r.raw(&mut m, "mode") {
        let mk = join_key(key, "mode");
        match raw {
            Value::String(s) if s.len() >= 3 && s.len() <= 4 && s.chars().all(|c| ('0'..='7').contains(&c)) => {
                entry.mode = u32::from_str_radix(s, 8).unwrap_or(0);
            }
            Value::Number(_) => r.error(&mk, "write modes as quoted octal strings, such as \"0644\" (YAML reads 0644 as a number)"),
            _ => r.error(&mk, "must be an octal string such as \"0644\" or \"4755\""),
        }
    }
    if let Some(uid) = r.opt::<u32>(&mut m, "owner") {
        entry.uid = uid;
    }
    if let Some(gid) = r.opt::<u32>(&mut m, "group") {
        entry.gid = gid;
    }
    if let Some(x) = r.opt::<BTreeMap<String, String>>(&mut m, "xattrs") {
        for (name, value) in x {
            let xk = join_key(&join_key(key, "xattrs"), &name);
            let known = ["security.", "user.", "trusted."];
            if !known.iter().any(|p| name.starts_with(p)) || name.len() > 255 {
                r.error(&xk, "xattr names start with security., user. or trusted.");
                continue;
            }
            match value.strip_prefix("0x").map(hex::decode) {
                Some(Ok(bytes)) => {
                    entry.xattrs.insert(name, bytes);
                }
                _ => r.error(
                    &xk,
                    "xattr values are hex strings with a 0x prefix, such as 0x0100000200200000",
                ),
            }
        }
    }
    r.finish(m);
    ok
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

    use super::super::fixtures::layer;
    use super::*;

    const HEAD: &str = "collection: t\npriority: 5\nseries-compat: [anvil]\n";

    /// The diagnostics of a conf, as `line:key: message`, for a layer whose
    /// directory is `dir` under `root`.
    fn problems_at(root: &Path, dir: &Path, conf: &str) -> Vec<String> {
        let shown = "layers/t/conf/layer.yaml";
        match parse_layer(root, "t", dir, shown, conf) {
            Ok(_) => Vec::new(),
            Err(d) => d
                .iter()
                .map(|d| format!("{}:{}: {}", d.line, d.key, d.message))
                .collect(),
        }
    }

    /// [`problems_at`] for a layer with no `files/`.
    fn problems(conf: &str) -> Vec<String> {
        let root = tempfile::tempdir().unwrap();
        problems_at(root.path(), &root.path().join("layers/t"), conf)
    }

    fn entry(l: &LayerSpec, path: &str) -> LayerEntry {
        l.entries
            .iter()
            .find(|e| e.path == path)
            .unwrap_or_else(|| panic!("no {path} in {:#?}", l.entries))
            .clone()
    }

    #[test]
    fn the_header_is_read() {
        let l = layer(
            "meta-t",
            "collection: t\npriority: -3\nversion: 2\ndepends: [a, \"b:4\"]\nseries-compat: [old, anvil]\ndescription: x\n",
        );
        assert_eq!(
            (l.name.as_str(), l.dir.as_str()),
            ("meta-t", "layers/meta-t")
        );
        assert_eq!(
            (l.collection.as_str(), l.priority, l.version),
            ("t", -3, Some(2))
        );
        assert_eq!(l.depends, [("a".into(), None), ("b".into(), Some(4))]);
        assert_eq!(l.conf.file, Path::new("layers/meta-t/conf/layer.yaml"));
        assert_eq!(
            problems("collection: t/x\npriority: 5\nseries-compat: [zephyr]\ndepends: [\"a:x\"]\n"),
            [
                "1:collection: 't/x' is not a collection name (A-Z, a-z, 0-9, '.', '_', '-')",
                "3:series-compat: layer is compatible with series [zephyr], but this slotsmith is series 'anvil'",
                "4:depends[0]: 'a:x': the version after ':' must be a number",
            ]
        );
        assert_eq!(
            problems("collection: t\n"),
            [
                "1:priority: missing required key 'priority'",
                "1:series-compat: missing required key 'series-compat'",
            ]
        );
    }

    #[test]
    fn declared_entries_say_what_they_are() {
        let conf = format!(
            "{HEAD}files:
  /dev/console: {{type: char, major: 5, minor: 1, mode: \"0600\"}}
  /dev/sda: {{type: block, major: 8, minor: 0}}
  /run/initctl: {{type: fifo}}
  /srv/data: {{type: directory, owner: 1000, group: 1000, mode: \"0750\"}}
  /lib: {{type: symlink, target: usr/lib}}
  /usr/bin/ping: {{type: directory, xattrs: {{security.capability: \"0x0100\"}}}}
"
        );
        let l = layer("t", &conf);
        let paths: Vec<_> = l.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/dev/console",
                "/dev/sda",
                "/lib",
                "/run/initctl",
                "/srv/data",
                "/usr/bin/ping"
            ]
        );
        let e = entry(&l, "/dev/console");
        assert_eq!(
            (e.kind, e.mode),
            (LayerEntryKind::Char { major: 5, minor: 1 }, 0o600)
        );
        let e = entry(&l, "/dev/sda");
        assert_eq!(
            (e.kind, e.mode),
            (LayerEntryKind::Block { major: 8, minor: 0 }, 0o644)
        );
        assert_eq!(entry(&l, "/run/initctl").kind, LayerEntryKind::Fifo);
        let e = entry(&l, "/srv/data");
        assert_eq!((e.mode, e.uid, e.gid), (0o750, 1000, 1000));
        let e = entry(&l, "/lib");
        assert_eq!(
            (e.kind, e.mode),
            (
                LayerEntryKind::Symlink {
                    target: "usr/lib".into()
                },
                0o777
            )
        );
        let x = entry(&l, "/usr/bin/ping").xattrs;
        assert_eq!(
            x.get("security.capability").map(Vec::as_slice),
            Some(&[1u8, 0][..])
        );
    }

    #[test]
    fn a_declared_entry_that_cannot_be_built_is_reported_at_its_key() {
        let conf = format!(
            "{HEAD}files:
  /missing: {{}}
  /s: {{type: symlink}}
  /d: {{type: char}}
  /q: {{type: socket}}
  /t: {{type: fifo, target: x, major: 1}}
  /m: {{type: fifo, mode: 420}}
  /o: {{type: fifo, mode: \"rw\"}}
  /x: {{type: fifo, xattrs: {{system.x: \"0x00\", user.y: \"00\"}}}}
  rel: {{type: fifo}}
  /a/../../b: {{type: fifo}}
"
        );
        let root = tempfile::tempdir().unwrap();
        let got = problems_at(root.path(), &root.path().join("t"), &conf);
        assert_eq!(
            got,
            [
                "5:files./missing: no such path in files/; add the file or give a 'type' (directory, symlink, char, block, fifo)",
                "6:files./s: a symlink needs a 'target'",
                "7:files./d: a device needs 'major' and 'minor'",
                "8:files./q.type: unknown type 'socket' (expected directory, symlink, char, block or fifo)",
                "9:files./t: only a device has major and minor numbers",
                "9:files./t.target: only a symlink has a target",
                "10:files./m.mode: write modes as quoted octal strings, such as \"0644\" (YAML reads 0644 as a number)",
                "11:files./o.mode: must be an octal string such as \"0644\" or \"4755\"",
                "12:files./x.xattrs.system.x: xattr names start with security., user. or trusted.",
                "12:files./x.xattrs.user.y: xattr values are hex strings with a 0x prefix, such as 0x0100000200200000",
                "13:files.rel: paths must be absolute, such as /etc/motd",
                "14:files./a/../../b: path escapes the rootfs (it contains a `..` component)",
            ]
        );
    }

    #[test]
    fn the_remove_list_is_sorted_deduplicated_and_remembers_where_each_is() {
        let conf = format!("{HEAD}remove:\n  - /etc/b\n  - /etc/a\n  - /etc//a\n  - /usr/./x\n");
        let l = layer("t", &conf);
        assert_eq!(l.remove, ["/etc/a", "/etc/b", "/usr/x"]);
        let line = |p: &str| {
            let d = l.remove_at[p].diagnostic("");
            (d.line, d.key)
        };
        assert_eq!(line("/etc/b"), (5, "remove[0]".into()));
        // The first place a path is written.
        assert_eq!(line("/etc/a"), (6, "remove[1]".into()));
        assert_eq!(line("/usr/x"), (8, "remove[3]".into()));
        assert_eq!(
            problems(&format!("{HEAD}remove: [etc/a, /, \"/a/\\0\"]\n")),
            [
                "4:remove[0]: paths must be absolute and not the root",
                "4:remove[1]: paths must be absolute and not the root",
                "4:remove[2]: control character '\\0' is not allowed in values",
                "4:remove[2]: path contains a NUL byte",
            ]
        );
    }

    /// A layer directory with a `files/` tree for the walk tests.
    fn tree() -> (tempfile::TempDir, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("layers/t");
        let files = dir.join("files");
        fs::create_dir_all(files.join("etc")).unwrap();
        fs::create_dir_all(files.join("usr/bin")).unwrap();
        fs::write(files.join("etc/motd"), "hi\n").unwrap();
        fs::write(files.join("usr/bin/tool"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(
            files.join("usr/bin/tool"),
            fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        (root, dir)
    }

    #[test]
    fn the_walk_records_files_by_hash_with_git_modes_and_root_owners() {
        let (root, dir) = tree();
        let conf = format!("{HEAD}files:\n  /usr/bin/tool: {{mode: \"4750\", group: 50}}\n");
        let l = parse_layer(root.path(), "t", &dir, "c.yaml", &conf).unwrap();
        let paths: Vec<_> = l.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["/etc", "/etc/motd", "/usr", "/usr/bin", "/usr/bin/tool"]
        );
        let motd = entry(&l, "/etc/motd");
        assert_eq!((motd.mode, motd.uid, motd.gid), (0o644, 0, 0));
        let LayerEntryKind::File { source, size, .. } = &motd.kind else {
            panic!("{motd:?}")
        };
        assert_eq!((source.as_str(), *size), ("layers/t/files/etc/motd", 3));
        let tool = entry(&l, "/usr/bin/tool");
        assert_eq!((tool.mode, tool.uid, tool.gid), (0o4750, 0, 50));
        assert_eq!(entry(&l, "/etc").mode, 0o755);
        // Without a declared mode, any executable bit gives 0755.
        let l = parse_layer(root.path(), "t", &dir, "c.yaml", HEAD).unwrap();
        assert_eq!(entry(&l, "/usr/bin/tool").mode, 0o755);
        // A path in files/ takes its type from there.
        let conf = format!("{HEAD}files:\n  /etc/motd: {{type: fifo}}\n");
        assert_eq!(
            problems_at(root.path(), &dir, &conf),
            ["5:files./etc/motd.type: the path exists in files/, so its type comes from there"]
        );
    }

    #[test]
    fn symlinks_in_files_are_data_and_never_followed() {
        let (root, dir) = tree();
        let outside = root.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("secret"), "x").unwrap();
        let files = dir.join("files");
        // A link to a directory outside the layer, and an absolute one.
        symlink(&outside, files.join("lib")).unwrap();
        symlink("/etc/passwd", files.join("etc/passwd")).unwrap();
        let conf = format!("{HEAD}files:\n  /etc/passwd: {{owner: 7}}\n");
        let l = parse_layer(root.path(), "t", &dir, "c.yaml", &conf).unwrap();
        let lib = entry(&l, "/lib");
        assert_eq!(
            (lib.kind, lib.mode),
            (
                LayerEntryKind::Symlink {
                    target: outside.to_string_lossy().into_owned()
                },
                0o777
            )
        );
        assert!(
            l.entries.iter().all(|e| !e.path.starts_with("/lib/")),
            "walked through a symlink: {:#?}",
            l.entries
        );
        let passwd = entry(&l, "/etc/passwd");
        assert_eq!(
            passwd.kind,
            LayerEntryKind::Symlink {
                target: "/etc/passwd".into()
            }
        );
        assert_eq!(passwd.uid, 7, "declared attributes apply to a link itself");
    }

    #[test]
    fn only_files_directories_and_symlinks_belong_in_files() {
        let (root, dir) = tree();
        let fifo = dir.join("files/etc/initctl");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from(0o644),
            0,
        )
        .unwrap();
        assert_eq!(
            problems_at(root.path(), &dir, HEAD),
            ["1:: layers/t/files/etc/initctl: only files, directories and symlinks belong in files/; declare devices and fifos in conf/layer.yaml"]
        );
    }
}
