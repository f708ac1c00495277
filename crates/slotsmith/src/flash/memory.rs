//! How much of a checked image `flash` keeps in memory to write from
//! there: what the kernel and the cgroup limits that bind this process
//! leave, halved and capped.

use std::path::PathBuf;

use super::System;

/// Bytes of checked ranges kept in memory, to be written from there: half
/// of what the kernel says is available (to the system, and under the
/// cgroup v2 limit when there is one), at most [`MAX_KEPT`]; 256 MiB when
/// it does not say.
pub(super) fn memory_budget(sys: &System) -> u64 {
    let available = std::fs::read_to_string(&sys.meminfo)
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.trim().strip_suffix("kB"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .map(|kib| kib.saturating_mul(1024));
    // A cgroup's limit (a container, a systemd service or slice) binds too.
    let available = match (available, cgroup_available(sys)) {
        (Some(a), Some(c)) => Some(a.min(c)),
        (a, c) => a.or(c),
    };
    available.map_or(256 << 20, |a| (a / 2).min(MAX_KEPT))
}

/// What the cgroup v2 limits on the way from this process's cgroup up to
/// the root leave: at each level with a `memory.max`, the limit less what
/// is used, not counting page cache the kernel can drop
/// (`inactive_file`); the least of them. `None` when no level says.
fn cgroup_available(sys: &System) -> Option<u64> {
    let num = |p: PathBuf| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
    };
    let text = std::fs::read_to_string(&sys.cgroup).ok()?;
    let own = text.lines().find_map(|l| l.strip_prefix("0::"))?.trim();
    if own.split('/').any(|c| c == "..") {
        return None;
    }
    let root = sys.sys.join("fs/cgroup");
    let mut dir = root.join(own.trim_start_matches('/'));
    let mut least: Option<u64> = None;
    loop {
        if let (Some(max), Some(current)) =
            (num(dir.join("memory.max")), num(dir.join("memory.current")))
        {
            let droppable = std::fs::read_to_string(dir.join("memory.stat"))
                .ok()
                .and_then(|t| {
                    t.lines()
                        .find_map(|l| l.strip_prefix("inactive_file "))
                        .and_then(|v| v.trim().parse::<u64>().ok())
                })
                .unwrap_or(0);
            let left = max.saturating_sub(current.saturating_sub(droppable));
            least = Some(least.map_or(left, |l| l.min(left)));
        }
        if dir == root || !dir.pop() || !dir.starts_with(&root) {
            return least;
        }
    }
}

/// Most bytes [`memory_budget`] keeps.
pub(super) const MAX_KEPT: u64 = 8 << 30;
