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
            for (name, hex_value) in &e.xattrs {
                let value = hex::decode(hex_value).unwrap_or_default();
                limits::check_xattr(name, &value, target)?;
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
