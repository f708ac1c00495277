//! `cargo xtask lint`: loads every image under `images/` with its layers
//! and policies (a lock older than its image is reported here too), then
//! checks the policies for conflicts, including those no image uses.

use std::path::PathBuf;

use anyhow::Context;

use super::Failure;

/// `cargo xtask lint`: every image with its layers and policies, then the
/// policy conflicts.
pub(crate) fn lint(root: PathBuf) -> Result<(), Failure> {
    let mut diags = slotsmith::diag::Diagnostics::default();
    let mut findings = Vec::new();
    let mut images: Vec<PathBuf> = std::fs::read_dir(root.join("images"))
        .with_context(|| format!("reading {}", root.join("images").display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    images.sort();
    for image in &images {
        match slotsmith::load::load_image(image) {
            Err(d) => diags.extend(d),
            Ok(loaded) => {
                let mut layer_paths = Vec::new();
                for l in &loaded.layers {
                    for e in &l.entries {
                        layer_paths.push((e.path.clone(), format!("{}/files{}", l.dir, e.path)));
                    }
                }
                for f in slotsmith_policy::lint(&loaded.image.rules, &layer_paths) {
                    let line = f.to_string();
                    if !findings.contains(&line) {
                        findings.push(line);
                    }
                }
            }
        }
    }
    // Policies no image uses are still checked.
    let mut all: Vec<String> = std::fs::read_dir(root.join("policies"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_suffix(".yaml"))
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    all.sort();
    if let Err(d) = slotsmith_policy::load_policies(&root, &all) {
        diags.extend(d);
    }
    let diags = diags.sorted();
    if !diags.is_empty() {
        eprintln!("{diags}");
    }
    for f in &findings {
        eprintln!("{f}");
    }
    let n = diags.len() + findings.len();
    if n > 0 {
        eprintln!("error: {n} problem(s) in images/, layers/ and policies/");
        return Err(Failure::Input(slotsmith::diag::Diagnostics::default()));
    }
    eprintln!(
        "lint: {} image(s), {} polic(ies): no problems",
        images.len(),
        all.len()
    );
    Ok(())
}
