//! The names and numbers of the A/B disk layout, in one place: the slots,
//! the GPT partition names, the output names derived from them, and the GPT
//! geometry. The plan, the loader, the build and `verify` all spell them
//! through here, so a device, an update and a verifier can never disagree
//! about which partition is which.

/// The two slots, in GPT order.
pub const SLOTS: [&str; 2] = ["a", "b"];

/// The boot (EFI system) partition's GPT name.
pub const ESP: &str = "esp";

/// The data partition's GPT name (and its ext4 label).
pub const DATA: &str = "data";

/// Logical sector size of the disk image.
pub const SECTOR: u64 = 512;

/// Sectors of the primary GPT: the protective MBR, the header and 32
/// sectors of entries (128 entries of 128 bytes).
pub const GPT_PRIMARY_SECTORS: u64 = 34;

/// Sectors of the backup GPT at the end of the disk: the entries and the
/// header.
pub const GPT_BACKUP_SECTORS: u64 = 33;

/// A slot's root partition: `root-<slot>`.
pub fn root_partition(slot: &str) -> String {
    format!("root-{slot}")
}

/// A slot's dm-verity hash partition: `root-<slot>-verity`.
pub fn verity_partition(slot: &str) -> String {
    format!("root-{slot}-verity")
}

/// Every slot partition, in GPT order: each slot's root, then its verity.
pub fn slot_partitions() -> Vec<String> {
    SLOTS
        .iter()
        .flat_map(|s| [root_partition(s), verity_partition(s)])
        .collect()
}

/// A slot's verity tree in `out/`.
pub fn verity_output(slot: &str) -> String {
    format!("root-{slot}.verity")
}

/// A slot's signed boot manifest in `out/`.
pub fn manifest_output(slot: &str) -> String {
    format!("boot-{slot}.manifest")
}

/// Its raw Ed25519 signature in `out/`.
pub fn signature_output(slot: &str) -> String {
    format!("boot-{slot}.manifest.sig")
}

/// A slot's directory on the boot partition.
pub fn esp_dir(slot: &str) -> String {
    format!("/{slot}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_partitions_are_in_gpt_order() {
        assert_eq!(
            slot_partitions(),
            ["root-a", "root-a-verity", "root-b", "root-b-verity"]
        );
        assert_eq!(verity_partition("b"), "root-b-verity");
    }
}
