//! The layer-set rules, as in Yocto: each layer an image lists is found
//! and loaded, every dependency is provided in the version asked for, no
//! collection is provided twice, two layers of equal priority never write
//! the same path, and every entry fits the image's filesystem.
//!
//! [`load_layers`] finds the layer directories; the checks after it read
//! nothing from disk.

use std::collections::BTreeMap;
use std::fs;

use slotsmith_rootfs::path::RelPath;
use slotsmith_yaml::input::{refuse_symlink, resolve_input};

use super::layer::load_layer;
use crate::diag::Diagnostics;
use crate::spec::*;
use crate::yaml::{join_key, Doc};

/// Loads the layers `image` lists, checks them as a set and returns them
/// in application order. Problems with a layer's place in the image are
/// reported at `layers[i]` of the image file (`image_doc`).
pub(super) fn load_layers(
    image: &ImageSpec,
    image_doc: &Doc,
    diags: &mut Diagnostics,
) -> Vec<LayerSpec> {
    let mut layers = Vec::new();
    for (i, name) in image.layers.iter().enumerate() {
        // A layer directory may link within the project (to a checkout
        // under sources/, say), never out of it; its conf/ and files/ are
        // walked and may not be links at all (crates/yaml/src/input.rs).
        let dir = match resolve_input(&image.root, &format!("layers/{name}")) {
            Ok(d) => d,
            Err(e) if fs::symlink_metadata(image.root.join("layers").join(name)).is_ok() => {
                diags.push(image_doc.diag(&format!("layers[{i}]"), e));
                continue;
            }
            Err(_) => image.root.join("layers").join(name),
        };
        let structural = [
            (dir.join("conf"), "layer conf/"),
            (dir.join("conf/layer.yaml"), "layer conf/layer.yaml"),
            (dir.join("files"), "layer files/"),
        ];
        if let Some(e) = structural
            .iter()
            .find_map(|(p, what)| refuse_symlink(p, what).err())
        {
            diags.push(image_doc.diag(&format!("layers[{i}]"), e));
            continue;
        }
        let conf = dir.join("conf/layer.yaml");
        if !conf.is_file() {
            diags.push(image_doc.diag(
                &format!("layers[{i}]"),
                format!("no layer at layers/{name} (missing conf/layer.yaml)"),
            ));
            continue;
        }
        // Shown paths are relative to the real root, since `dir` is
        // resolved: the plan stays independent of where the checkout is.
        let root_real = image
            .root
            .canonicalize()
            .unwrap_or_else(|_| image.root.clone());
        match load_layer(&root_real, name, &dir, &conf) {
            Ok(l) => layers.push(l),
            Err(d) => diags.extend(d),
        }
    }
    for l in &layers {
        check_layer_limits(image, l, diags);
    }
    check_layer_set(image, image_doc, &layers, diags);
    // Application order: ascending priority; a stable sort keeps the listed
    // order between equal priorities (which cannot write the same path).
    layers.sort_by_key(|l| l.priority);
    layers
}

/// Checks every layer entry against what the image's filesystem can hold
/// (`slotsmith_rootfs::limits`: name and path lengths, symlink targets,
/// device numbers, xattrs), so such an entry is an input error at load,
/// with its position, rather than a build failure. Declared entries are
/// reported at their `files.<path>` key, others at the layer file.
fn check_layer_limits(image: &ImageSpec, layer: &LayerSpec, diags: &mut Diagnostics) {
    use slotsmith_rootfs::limits::{self, Target};
    let target = match image.filesystem {
        Filesystem::Squashfs => Target::Squashfs,
        Filesystem::Ext4 => Target::Ext4,
    };
    for e in &layer.entries {
        let rel = e.path.trim_start_matches('/');
        let res = RelPath::parse(rel).and_then(|p| {
            limits::check_path(&p, target)?;
            match &e.kind {
                LayerEntryKind::Symlink { target: t } => limits::check_symlink_target(t)?,
                LayerEntryKind::Char { major, minor } | LayerEntryKind::Block { major, minor } => {
                    limits::check_device(*major, *minor, target)?
                }
                _ => {}
            }
            for (name, value) in &e.xattrs {
                limits::check_xattr(name, value, target)?;
            }
            Ok(())
        });
        if let Err(err) = res {
            // At `files.<path>` when declared, else where `files` (or the
            // document) starts; the message names the layer file either way.
            let key = join_key("files", &e.path);
            diags.push(layer.conf.diag(&key, format!("{err:#}")));
        }
    }
}

/// The set rules: dependencies and their versions (at the depending
/// layer's `depends`), one provider per collection (at the image's
/// `layers[i]`) and no path written by two layers of equal priority (at
/// the second layer's `priority`).
fn check_layer_set(image: &ImageSpec, doc: &Doc, layers: &[LayerSpec], diags: &mut Diagnostics) {
    let by_collection: BTreeMap<&str, &LayerSpec> =
        layers.iter().map(|l| (l.collection.as_str(), l)).collect();
    for l in layers {
        for (dep, ver) in &l.depends {
            match by_collection.get(dep.as_str()) {
                None => diags.push(l.conf.diag(
                    "depends",
                    format!("layer {} depends on collection '{dep}', which no layer of image {} provides", l.name, image.name),
                )),
                Some(d) => {
                    if let Some(want) = ver {
                        if d.version != Some(*want) {
                            diags.push(l.conf.diag(
                                "depends",
                                format!(
                                    "layer {} needs collection '{dep}' version {want}, but {} has version {}",
                                    l.name,
                                    d.name,
                                    d.version.map_or("none".to_string(), |v| v.to_string())
                                ),
                            ));
                        }
                    }
                }
            }
        }
    }
    let mut collections: BTreeMap<&str, &str> = BTreeMap::new();
    for l in layers {
        if let Some(other) = collections.insert(&l.collection, &l.name) {
            let i = image.layers.iter().position(|n| n == &l.name).unwrap_or(0);
            diags.push(doc.diag(
                &format!("layers[{i}]"),
                format!(
                    "layers {other} and {} both provide collection '{}'",
                    l.name, l.collection
                ),
            ));
        }
    }
    // Equal priorities cannot settle who owns a path, so writing (or
    // removing) the same path from two such layers is an error, as in Yocto.
    let mut writers: BTreeMap<(i64, &str), &str> = BTreeMap::new();
    for l in layers {
        let paths = l
            .entries
            .iter()
            .filter(|e| e.kind != LayerEntryKind::Directory)
            .map(|e| e.path.as_str());
        for p in paths.chain(l.remove.iter().map(String::as_str)) {
            if let Some(other) = writers.insert((l.priority, p), &l.name) {
                if other != l.name {
                    diags.push(l.conf.diag(
                        "priority",
                        format!(
                            "layers {other} and {} both write {p} with the same priority {}; give one a higher priority",
                            l.name, l.priority
                        ),
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::fixtures::{image_at, layer, MINIMAL};
    use super::*;

    /// A layer conf: its collection and priority, then `extra` lines.
    fn conf(collection: &str, priority: i64, extra: &str) -> String {
        format!("collection: {collection}\npriority: {priority}\nseries-compat: [anvil]\n{extra}")
    }

    /// An image listing `layers` (line 13), read under an empty project,
    /// with `extra` lines after the list.
    fn image_listing(layers: &[&str], extra: &str) -> (ImageSpec, Doc) {
        let root = tempfile::tempdir().unwrap();
        let text = format!("{MINIMAL}layers: [{}]\n{extra}", layers.join(", "));
        let (image, doc, diags) = image_at(root.path(), &text);
        assert!(diags.is_empty(), "{diags:#?}");
        (image.unwrap(), doc)
    }

    fn shown(diags: Diagnostics) -> Vec<String> {
        diags
            .sorted()
            .iter()
            .map(|d| format!("{}:{}:{}: {}", d.file.display(), d.line, d.key, d.message))
            .collect()
    }

    /// The set rules over `layers`, listed in this order by the image.
    fn set_problems(layers: &[LayerSpec]) -> Vec<String> {
        let names: Vec<&str> = layers.iter().map(|l| l.name.as_str()).collect();
        let (image, doc) = image_listing(&names, "");
        let mut diags = Diagnostics::default();
        check_layer_set(&image, &doc, layers, &mut diags);
        shown(diags)
    }

    #[test]
    fn a_missing_dependency_is_reported_at_depends() {
        let a = layer("meta-a", &conf("a", 5, "depends: [b, c]\n"));
        let b = layer("meta-b", &conf("b", 5, ""));
        assert_eq!(
            set_problems(&[a, b]),
            ["layers/meta-a/conf/layer.yaml:4:depends: layer meta-a depends on collection 'c', which no layer of image t provides"]
        );
    }

    #[test]
    fn a_dependency_version_must_match() {
        let a = layer(
            "meta-a",
            &conf("a", 5, "depends: [\"b:2\", \"c:1\", \"d:3\"]\n"),
        );
        let b = layer("meta-b", &conf("b", 5, "version: 1\n"));
        let c = layer("meta-c", &conf("c", 5, "version: 1\n"));
        let d = layer("meta-d", &conf("d", 5, ""));
        assert_eq!(
            set_problems(&[a, b, c, d]),
            [
                "layers/meta-a/conf/layer.yaml:4:depends: layer meta-a needs collection 'b' version 2, but meta-b has version 1",
                "layers/meta-a/conf/layer.yaml:4:depends: layer meta-a needs collection 'd' version 3, but meta-d has version none",
            ]
        );
    }

    #[test]
    fn the_same_path_at_equal_priority_is_refused() {
        let fifo = |p: &str| format!("files:\n  {p}: {{type: fifo}}\n  /d: {{type: directory}}\n");
        let a = layer("meta-a", &conf("a", 5, &fifo("/etc/x")));
        let b = layer("meta-b", &conf("b", 5, &fifo("/etc/x")));
        assert_eq!(
            set_problems(&[a.clone(), b]),
            ["layers/meta-b/conf/layer.yaml:2:priority: layers meta-a and meta-b both write /etc/x with the same priority 5; give one a higher priority"]
        );
        // Removing a path another layer of that priority writes is as
        // ambiguous.
        let c = layer("meta-c", &conf("c", 5, "remove: [/etc/x]\n"));
        assert_eq!(set_problems(&[a.clone(), c]).len(), 1);
        // A higher priority settles it; directories never conflict.
        let d = layer("meta-d", &conf("d", 6, &fifo("/etc/x")));
        assert!(set_problems(&[a, d]).is_empty());
    }

    #[test]
    fn a_collection_is_provided_once() {
        let a = layer("meta-a", &conf("x", 5, ""));
        let b = layer("meta-b", &conf("x", 6, ""));
        assert_eq!(
            set_problems(&[a, b]),
            ["images/t.yaml:13:layers[1]: layers meta-a and meta-b both provide collection 'x'"]
        );
    }

    #[test]
    fn entries_must_fit_the_image_filesystem() {
        // A minor number squashfs holds and ext4 does not.
        let l = layer(
            "meta-a",
            &conf(
                "a",
                5,
                "files:\n  /dev/x: {type: char, major: 1, minor: 70000}\n",
            ),
        );
        let (squashfs, _) = image_listing(&["meta-a"], "");
        let mut diags = Diagnostics::default();
        check_layer_limits(&squashfs, &l, &mut diags);
        assert!(diags.is_empty(), "{diags}");
        let (ext4, _) = image_listing(&["meta-a"], "rootfs: {filesystem: ext4}\n");
        check_layer_limits(&ext4, &l, &mut diags);
        let got = shown(diags);
        assert_eq!(got.len(), 1, "{got:#?}");
        assert!(
            got[0].starts_with("layers/meta-a/conf/layer.yaml:5:files./dev/x: "),
            "{got:#?}"
        );
        assert!(
            got[0].contains("ext4 images take minors up to 65535"),
            "{got:#?}"
        );
    }

    /// Writes `layers/<name>/conf/layer.yaml` under `root`.
    fn write_layer(root: &Path, name: &str, conf: &str) {
        let c = root.join("layers").join(name).join("conf");
        fs::create_dir_all(&c).unwrap();
        fs::write(c.join("layer.yaml"), conf).unwrap();
    }

    #[test]
    fn layers_are_found_and_applied_in_priority_order() {
        let root = tempfile::tempdir().unwrap();
        let p = root.path();
        write_layer(p, "meta-high", &conf("high", 9, ""));
        write_layer(p, "meta-low", &conf("low", 1, ""));
        write_layer(p, "meta-mid", &conf("mid", 5, ""));
        let text = format!("{MINIMAL}layers: [meta-high, meta-low, meta-mid]\n");
        let (image, doc, _) = image_at(p, &text);
        let mut diags = Diagnostics::default();
        let layers = load_layers(&image.unwrap(), &doc, &mut diags);
        assert!(diags.is_empty(), "{diags}");
        let order: Vec<_> = layers.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(order, ["meta-low", "meta-mid", "meta-high"]);
    }

    #[test]
    fn a_layer_that_is_missing_or_linked_is_reported_at_its_place_in_the_image() {
        let root = tempfile::tempdir().unwrap();
        let p = root.path();
        write_layer(p, "meta-real", &conf("real", 5, ""));
        let linked = p.join("layers/meta-linked/conf");
        fs::create_dir_all(&linked).unwrap();
        std::os::unix::fs::symlink(
            p.join("layers/meta-real/conf/layer.yaml"),
            linked.join("layer.yaml"),
        )
        .unwrap();
        let text = format!("{MINIMAL}layers: [meta-real, meta-gone, meta-linked]\n");
        let (image, doc, _) = image_at(p, &text);
        let mut diags = Diagnostics::default();
        let layers = load_layers(&image.unwrap(), &doc, &mut diags);
        assert_eq!(layers.len(), 1);
        let got = shown(diags);
        assert_eq!(got.len(), 2, "{got:#?}");
        assert_eq!(
            got[0],
            "images/t.yaml:13:layers[1]: no layer at layers/meta-gone (missing conf/layer.yaml)"
        );
        assert!(
            got[1].starts_with("images/t.yaml:13:layers[2]: "),
            "{got:#?}"
        );
        assert!(got[1].contains("symlink"), "{got:#?}");
    }
}
