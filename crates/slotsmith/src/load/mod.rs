//! The load stage: the only reader of `images/*.yaml` and `layers/*/`.
//!
//! It turns files into [`crate::spec`] values and collects every diagnostic,
//! with file, line and key, before failing. It also hashes the inputs the
//! plan depends on (a base tarball, each layer file), so that the plan, and
//! its hash in `build.json`, changes whenever an input does.
//!
//! Layer rules follow Yocto: missing dependencies, an incompatible series
//! and two layers of equal priority writing the same path are load errors.
//!
//! One module per job:
//!
//! - `mod.rs`: the entry points. [`load_image`] reads the image file and
//!   [`parse_image`] takes its text; `Inputs` is every access the image
//!   schema makes to the project's files.
//! - `image.rs`: the image schema (`name` to `update`), from a parsed
//!   document.
//! - `keys.rs`: the `signing:` section and the lexical development-key rule.
//! - `layer.rs`: one layer directory, [`load_layer`] / [`parse_layer`]: its
//!   `conf/layer.yaml` and the walk of its `files/`.
//! - `layerset.rs`: finding the listed layers and the rules over the set.
//! - `lock.rs`: the Debian base's lock file next to the image, and whether
//!   it is older than the image definition.
//! - `util.rs`: sizes, name rules, shown paths and file hashing, which the
//!   build and the CLI use too.

mod chain;
mod image;
mod keys;
mod layer;
mod layerset;
pub mod lock;
pub mod previous;
mod util;

use std::path::{Path, PathBuf};

use crate::diag::Diagnostics;
use crate::spec::{FileInput, Loaded};
use crate::yaml::{Doc, Reader};
use slotsmith_yaml::input::{refuse_symlink, resolve_input, resolve_input_file};

pub use image::{MAX_ALIGNMENT, MAX_LAYOUT_SIZE, MAX_SOURCE_DATE_EPOCH};
pub use keys::is_dev_key_path;
pub use layer::{load_layer, parse_layer};
pub use util::{display_path, hash_file, human, parse_size};

/// Resolves what the user typed (`demo`, `images/demo.yaml`, or any path)
/// to an image file.
pub fn resolve_image_arg(root: &Path, arg: &str) -> PathBuf {
    let p = Path::new(arg);
    if is_image_name(arg) {
        return root.join("images").join(format!("{arg}.yaml"));
    }
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

/// Whether the user named an image under the project's `images/` (`demo`)
/// rather than giving a path (`images/demo.yaml`, `/srv/x.yaml`).
pub fn is_image_name(arg: &str) -> bool {
    !arg.contains('/') && !arg.ends_with(".yaml")
}

/// Loads an image file and its layers. The project root is the parent of
/// the directory holding the image file (`<root>/images/<name>.yaml`).
pub fn load_image(image_path: &Path) -> Result<Loaded, Diagnostics> {
    let mut loaded = load_image_unlocked(image_path)?;
    loaded.lock = lock::read_lock(&loaded.image, true)?;
    Ok(loaded)
}

/// [`load_image`] without reading the base's lock: what `lock` itself
/// loads, since it must work on an image whose lock is stale or absent.
pub fn load_image_unlocked(image_path: &Path) -> Result<Loaded, Diagnostics> {
    let abs = absolute(image_path);
    let root = abs
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let shown = display_path(&root, &abs);
    let text = read_text(&abs, &shown)?;
    parse_image(&root, &shown, &text)
}

/// Parses the text of an image file shown as `shown` (its path relative to
/// `root`) and loads the layers and policies it names under `root`: all of
/// [`load_image`] but reading the image file, so tests and fuzzers can
/// give text directly.
pub fn parse_image(root: &Path, shown: &str, text: &str) -> Result<Loaded, Diagnostics> {
    let doc = Doc::parse(Path::new(shown), text)?;
    let inputs = Inputs { root };
    let mut r = Reader::new(&doc);
    let image = image::read_image(&mut r, &inputs, shown);
    let mut diags = r.diags;
    let Some(mut image) = image else {
        return Err(diags.sorted());
    };
    let layers = layerset::load_layers(&image, &doc, &mut diags);
    // Policies only when every named file exists (already reported).
    if image.policies.iter().all(|p| inputs.has_policy(p)) {
        match slotsmith_policy::load_policies(&image.root, &image.policies) {
            Ok(rules) => {
                for (i, w) in image.waivers.iter().enumerate() {
                    if !rules.iter().any(|r| r.id == w.rule) {
                        diags.push(doc.diag(
                            &format!("waivers[{i}].rule"),
                            format!(
                                "no rule '{}' in the image's policies ({})",
                                w.rule,
                                image.policies.join(", ")
                            ),
                        ));
                    }
                }
                image.rules = rules;
            }
            Err(d) => diags.extend(d),
        }
    }
    diags.into_result(Loaded {
        image,
        layers,
        lock: None,
    })
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

/// Reads an image or layer file: at most
/// [`slotsmith_yaml::read::MAX_YAML_BYTES`] (1 MiB), as UTF-8; a larger
/// file, an endless device or invalid UTF-8 is a diagnostic naming the file
/// (and the limit, or the position of the first bad byte).
fn read_text(abs: &Path, shown: &str) -> Result<String, Diagnostics> {
    slotsmith_yaml::read::read_yaml(abs, Path::new(shown))
}

/// Every access the image schema makes to the project's files, so the
/// schema readers themselves only read the document. Errors are messages
/// for a diagnostic at the key that named the input.
struct Inputs<'a> {
    /// The project root every input path is resolved under.
    pub root: &'a Path,
}

impl Inputs<'_> {
    /// An input file as written in the image (`base.tarball`,
    /// `kernel.image`): under the project, through no symlink out of it,
    /// and not a device (`crates/yaml/src/input.rs`).
    fn resolve_file(&self, written: &str) -> Result<PathBuf, String> {
        resolve_input_file(self.root, written)
    }

    /// The hash and size of a resolved input file, and its shown path.
    fn hash(&self, abs: &Path) -> Result<FileInput, String> {
        match hash_file(abs) {
            Ok((sha256, size)) => Ok(FileInput {
                path: display_path(self.root, abs),
                sha256,
                size,
            }),
            Err(e) => Err(format!("cannot read '{}': {e}", abs.display())),
        }
    }

    /// A base directory as written: it is walked, so it may not be a
    /// symlink itself, and the path to it may not leave the project
    /// through one.
    fn directory(&self, written: &str) -> Result<PathBuf, String> {
        refuse_symlink(&self.root.join(written), "base directory")
            .and_then(|()| resolve_input(self.root, written))
    }

    fn is_dir(&self, abs: &Path) -> bool {
        abs.is_dir()
    }

    /// A path as plans and diagnostics show it.
    fn shown(&self, abs: &Path) -> String {
        display_path(self.root, abs)
    }

    /// Whether `policies/<name>.yaml` exists.
    fn has_policy(&self, name: &str) -> bool {
        self.root
            .join("policies")
            .join(format!("{name}.yaml"))
            .is_file()
    }
}

/// Small inputs shared by the load modules' unit tests.
#[cfg(test)]
mod fixtures {
    use std::path::Path;

    use super::{image, parse_layer, Inputs};
    use crate::diag::Diagnostic;
    use crate::spec::{ImageSpec, LayerSpec};
    use crate::yaml::{Doc, Reader};

    /// How test images are shown in diagnostics.
    pub const SHOWN: &str = "images/t.yaml";

    /// The smallest valid image: a Debian base, so it names no file. Tests
    /// replace one line of it to keep the line numbers below.
    pub const MINIMAL: &str = "\
name: t
version: 1.0.0
arch: x86-64
board: b
hardware-compatibility: [\"1.0\"]
base:
  debian:
    suite: bookworm
layout:
  esp: 64MiB
  slot: 64MiB
  data: 64MiB
";

    /// Reads `text` with the image schema only (no layer or policy is
    /// loaded), with `root` as the project: the image, its document and
    /// every diagnostic, sorted.
    pub fn image_at(root: &Path, text: &str) -> (Option<ImageSpec>, Doc, Vec<Diagnostic>) {
        let doc = Doc::parse(Path::new(SHOWN), text).unwrap_or_else(|d| panic!("{d}"));
        let mut r = Reader::new(&doc);
        let image = image::read_image(&mut r, &Inputs { root }, SHOWN);
        let diags = r.diags.sorted().into_vec();
        (image, doc, diags)
    }

    /// [`image_at`] under an empty project.
    pub fn image(text: &str) -> (Option<ImageSpec>, Vec<Diagnostic>) {
        let root = tempfile::tempdir().unwrap();
        let (image, _, diags) = image_at(root.path(), text);
        (image, diags)
    }

    /// The one diagnostic `text` gives, or a panic listing them all.
    pub fn only_diag(text: &str) -> Diagnostic {
        let (_, diags) = image(text);
        match <[Diagnostic; 1]>::try_from(diags) {
            Ok([d]) => d,
            Err(all) => panic!("expected one diagnostic, got {all:#?}"),
        }
    }

    /// A layer from the text of its conf, with no `files/` tree, shown as
    /// `layers/<name>/conf/layer.yaml`.
    pub fn layer(name: &str, conf: &str) -> LayerSpec {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("layers").join(name);
        let shown = format!("layers/{name}/conf/layer.yaml");
        parse_layer(root.path(), name, &dir, &shown, conf).unwrap_or_else(|d| panic!("{d}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A project with one image and one layer, as `cargo xtask` finds it.
    fn project() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let p = root.path();
        std::fs::create_dir_all(p.join("images")).unwrap();
        std::fs::create_dir_all(p.join("layers/meta-a/conf")).unwrap();
        std::fs::create_dir_all(p.join("layers/meta-a/files/etc")).unwrap();
        std::fs::write(p.join("layers/meta-a/files/etc/motd"), "hi\n").unwrap();
        std::fs::write(
            p.join("layers/meta-a/conf/layer.yaml"),
            "collection: a\npriority: 5\nseries-compat: [anvil]\n",
        )
        .unwrap();
        let image = format!("{}layers: [meta-a]\n", fixtures::MINIMAL);
        std::fs::write(p.join("images/t.yaml"), image).unwrap();
        root
    }

    #[test]
    fn loading_a_file_is_parsing_its_text() {
        let root = project();
        let path = root.path().join("images/t.yaml");
        let loaded = load_image(&path).unwrap_or_else(|d| panic!("{d}"));
        let text = std::fs::read_to_string(&path).unwrap();
        let parsed = parse_image(root.path(), "images/t.yaml", &text).unwrap();
        assert_eq!(format!("{loaded:?}"), format!("{parsed:?}"));
        assert_eq!(loaded.image.file, "images/t.yaml");
        let [layer] = &loaded.layers[..] else {
            panic!("{:?}", loaded.layers)
        };
        assert_eq!(layer.collection, "a");
        assert_eq!(layer.entries.len(), 2, "{:?}", layer.entries);
        assert_eq!(layer.entries[1].path, "/etc/motd");
    }

    #[test]
    fn an_image_problem_stops_before_layers_are_loaded() {
        // A bad required key gives no image, so the layer list (which
        // names a missing layer) is not looked at: one diagnostic.
        let root = tempfile::tempdir().unwrap();
        let text = fixtures::MINIMAL.replace("arch: x86-64", "arch: sparc") + "layers: [nope]\n";
        let err = parse_image(root.path(), "images/t.yaml", &text).unwrap_err();
        assert_eq!(err.len(), 1, "{err}");
        assert_eq!(
            err.to_string(),
            "images/t.yaml:3:7: arch: unknown architecture 'sparc' (expected x86-64 or arm64)"
        );
    }

    #[test]
    fn a_missing_layer_is_reported_at_its_place_in_the_image() {
        let root = tempfile::tempdir().unwrap();
        let text = format!("{}layers: [meta-x]\n", fixtures::MINIMAL);
        let err = parse_image(root.path(), "images/t.yaml", &text).unwrap_err();
        assert_eq!(
            err.to_string(),
            "images/t.yaml:13:10: layers[0]: no layer at layers/meta-x (missing conf/layer.yaml)"
        );
    }

    #[test]
    fn image_arguments_are_names_or_paths() {
        assert!(is_image_name("demo"));
        assert!(!is_image_name("demo.yaml"));
        assert!(!is_image_name("images/demo"));
        let root = Path::new("/p");
        assert_eq!(
            resolve_image_arg(root, "demo"),
            Path::new("/p/images/demo.yaml")
        );
        assert_eq!(
            resolve_image_arg(root, "/srv/x.yaml"),
            Path::new("/srv/x.yaml")
        );
    }
}
