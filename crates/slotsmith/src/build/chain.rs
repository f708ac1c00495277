//! The boot chain stage: one signed UKI per slot, each slot's EFI Boot
//! Guard environment, and the signed loader for the ESP.
//!
//! Runs after `boot`, because a slot's UKI carries the signed command
//! line with the slot's verity root hash, which exists only once the tree
//! is built. Its inputs are outputs of earlier stages (the kernel, our
//! initramfs, the stub and the loader from the rootfs, the manifests), its
//! outputs are hashed here and join the boot stage's hashes.
//!
//! The UKI is the systemd stub with `.osrel`, `.cmdline`, `.linux` and
//! `.initrd` sections appended by `objcopy` at the plan's addresses. Both
//! `objcopy` and `sbsign` stamp the current time (the PE header's
//! TimeDateStamp, the signature's signingTime), so both run under
//! `faketime` frozen at `SOURCE_DATE_EPOCH` (`secureboot::frozen`): the
//! same inputs give the same bytes. Our initramfs is padded to 512 bytes, the PE file alignment, so
//! the last section ends on a boundary and `sbverify` sees no gap.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};

use crate::plan::Plan;
use crate::progress::Progress;

use super::boot::BootOut;
use super::{write_new, Hashed};

/// Signs an EFI binary: (unsigned input, signed output).
pub(super) type EfiSigner<'a> = dyn Fn(&Path, &Path) -> anyhow::Result<()> + 'a;

/// The UKI's `.osrel`: who this system is, for loaders and `bootctl`.
fn os_release(plan: &Plan) -> String {
    format!(
        "ID=slotsmith\nNAME=\"{0}\"\nPRETTY_NAME=\"{0} {1}\"\nIMAGE_ID={0}\nIMAGE_VERSION={1}\nVERSION_ID={1}\n",
        plan.image.name, plan.image.version
    )
}

/// Builds the chain's outputs into `out`, adding their hashes to `boot`.
pub(super) fn stage(
    plan: &Plan,
    boot: &mut BootOut,
    sign: &EfiSigner<'_>,
    work: &Path,
    out: &Path,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let Some(chain) = &plan.chain else {
        return Ok(());
    };
    progress.stage(
        "chain",
        "signed UKIs, loader environments and the signed loader",
    );
    let dir = work.join("chain");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let output = |role: &str| -> anyhow::Result<std::path::PathBuf> {
        let f = plan
            .boot
            .files
            .iter()
            .find(|f| f.role == role)
            .with_context(|| format!("the plan has no boot file for the {role}"))?;
        Ok(out.join(&f.output))
    };
    let (kernel, initrd, stub, loader) = (
        output("kernel")?,
        output("initrd")?,
        output("stub")?,
        output("loader")?,
    );
    let osrel = dir.join("os-release");
    write_new(&osrel, os_release(plan).as_bytes())?;
    let mut hashes = BTreeMap::new();

    for p in &chain.partitions {
        if p.filled {
            let signed = boot
                .slots
                .iter()
                .find(|s| s.record.slot == p.slot)
                .with_context(|| format!("slot {} has no signed manifest", p.slot))?;
            let manifest = slotsmith_sign::Manifest::parse(&signed.manifest)
                .with_context(|| format!("re-reading the manifest of slot {}", p.slot))?;
            let cmdline = dir.join(format!("cmdline-{}", p.slot));
            write_new(&cmdline, manifest.cmdline.as_bytes())?;
            let unsigned = dir.join(format!("{}.unsigned", p.uki_output));
            // objcopy stamps the PE header with the current time: frozen.
            let mut t = crate::secureboot::frozen("objcopy", plan.source_date_epoch)?;
            for (i, s) in chain.uki_sections.iter().enumerate() {
                let file = match s.content.as_str() {
                    "os-release" => &osrel,
                    "cmdline" => &cmdline,
                    "kernel" => &kernel,
                    "initrd" => &initrd,
                    other => bail!("the plan names an unknown UKI section content '{other}'"),
                };
                // Sections sit at fixed addresses: one that reaches the
                // next would overlap it in memory.
                if let Some(next) = chain.uki_sections.get(i + 1) {
                    let len = std::fs::metadata(file)
                        .with_context(|| format!("reading {}", file.display()))?
                        .len();
                    let room = next.vma.saturating_sub(s.vma);
                    if len > room {
                        bail!(
                            "the UKI's {} ({len} bytes) does not fit below {} at {:#x} ({room} bytes of room)",
                            s.name,
                            next.name,
                            next.vma
                        );
                    }
                }
                t = t
                    .arg("--add-section")
                    .arg(format!("{}={}", s.name, file.display()))
                    .arg("--change-section-vma")
                    .arg(format!("{}={:#x}", s.name, s.vma));
            }
            t.arg(&stub)
                .arg(&unsigned)
                .run()
                .with_context(|| format!("assembling the UKI of slot {}", p.slot))?;
            let uki = out.join(&p.uki_output);
            sign(&unsigned, &uki).with_context(|| format!("signing the UKI of slot {}", p.slot))?;
            hashes.insert(p.uki_output.clone(), Hashed::of_file(&uki)?);
        }
        let env = slotsmith_disk::bgenv::BgEnv {
            kernelfile: p.kernelfile.clone(),
            kernelparams: String::new(),
            revision: p.revision,
            ustate: if p.filled {
                slotsmith_disk::bgenv::UState::Ok
            } else {
                slotsmith_disk::bgenv::UState::Failed
            },
            in_progress: false,
            watchdog_timeout_sec: chain.watchdog_sec,
            user_vars: Vec::new(),
        };
        let bytes = slotsmith_disk::bgenv::encode(&env)
            .with_context(|| format!("encoding the loader environment of slot {}", p.slot))?;
        write_new(&out.join(&p.env_output), &bytes)?;
        hashes.insert(p.env_output.clone(), Hashed::of_bytes(&bytes));
    }
    let signed_loader = out.join(&chain.loader_output);
    sign(&loader, &signed_loader).context("signing the loader")?;
    hashes.insert(
        chain.loader_output.clone(),
        Hashed::of_file(&signed_loader)?,
    );
    boot.hashes.extend(hashes);
    Ok(())
}

/// Writes what manufacturing needs to enrol the Secure Boot keys into the
/// plan's Secure Boot directory, adding their hashes to `boot`.
pub(super) fn enrolment(
    plan: &Plan,
    keys: &crate::secureboot::SecureBootKeys,
    boot: &mut BootOut,
    out: &Path,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let Some(chain) = &plan.chain else {
        return Ok(());
    };
    if let Some(note) = keys.enrolment_note() {
        progress.note(&note);
    }
    let dir = out.join(&chain.secureboot_dir);
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = crate::secureboot::write_enrolment(&dir, keys, plan.source_date_epoch)?;
    written.push(crate::secureboot::ovmf_vars(
        &dir,
        keys,
        Path::new(crate::secureboot::OVMF_VARS_TEMPLATE),
        plan.source_date_epoch,
    )?);
    for path in written {
        let name = path
            .strip_prefix(out)
            .with_context(|| format!("{} is outside the output directory", path.display()))?
            .to_string_lossy()
            .into_owned();
        boot.hashes.insert(name, Hashed::of_file(&path)?);
    }
    Ok(())
}
