//! `cargo xtask bench build`: the default image built four times in one
//! run by the real command line, on a private copy of the project: a full
//! build with an empty stage cache, a no-op rebuild, a rebuild after one
//! changed layer file and a rebuild with a new boot key. It prints the
//! build's own per-stage seconds (from `build --json`), which stages the
//! stage cache served, peak memory, and issue 9's goals as ratios.
//!
//! Every build is a child process (this binary, `build --json`), so the
//! memory reported is the build's own and its tools' (tar2sqfs runs as the
//! build's child): `/usr/bin/time -v` gives the largest single process when
//! it is installed, and a sampler reads VmHWM and VmRSS of every
//! descendant from /proc, as `slotsmith::tool`'s sampler does for one tool.
//! A missed goal is printed as MISSED and the bench still exits 0: timings
//! on a shared machine are reported, never asserted.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use slotsmith::tool::Tool;

/// Issue 9: a no-op rebuild takes at most this many seconds.
const NOOP_GOAL_S: f64 = 2.0;
/// Issue 9: a one-layer-file change takes at most the slot image stages
/// plus this many seconds.
const LAYER_SLACK_S: f64 = 5.0;
/// Issue 9: a full build (base tarball cached) takes at most this multiple
/// of its slot image stages.
const FULL_OVER_ROOTFS_GOAL: f64 = 1.15;
/// Issue 9: peak memory of a full default build.
const PEAK_GOAL_MIB: f64 = 256.0;
/// The stages that make the slot image: what "the rootfs stage alone"
/// means in the goals (one cache entry covers them all).
const SLOT_IMAGE_STAGES: [&str; 4] = ["base", "harden", "layers", "rootfs"];
/// GNU time, for `-v`'s "Maximum resident set size".
const GNU_TIME: &str = "/usr/bin/time";
/// The default image.
const IMAGE: &str = "demo";
/// The layer file the one-file change edits, relative to the project.
const CHANGED_FILE: &str = "layers/meta-demo/files/etc/motd";
/// The cached stages in the order the build runs them, for the table.
const CACHE_ORDER: [&str; 4] = ["rootfs", "boot", "update", "disk"];
/// What the project copy holds: the build's inputs, nothing else (its keys
/// are generated there as development keys).
const INPUT_DIRS: [&str; 3] = ["images", "layers", "policies"];

/// One measured build.
struct Run {
    /// Column heading.
    label: &'static str,
    /// Wall-clock seconds of the whole command, start to exit.
    wall: f64,
    /// The build's stage seconds, summed per stage name, in order.
    stages: Vec<(String, f64)>,
    /// The stage cache's outcome per cached stage (`hit`, `miss`, `off`).
    cache: BTreeMap<String, String>,
    /// The published SHA256SUMS.
    sums: Vec<u8>,
    /// Peak memory of the build and its tools.
    memory: Memory,
}

impl Run {
    fn stage(&self, name: &str) -> Option<f64> {
        self.stages.iter().find(|(n, _)| n == name).map(|(_, s)| *s)
    }

    fn stage_sum(&self) -> f64 {
        self.stages.iter().map(|(_, s)| s).sum()
    }

    fn slot_image(&self) -> f64 {
        SLOT_IMAGE_STAGES.iter().filter_map(|s| self.stage(s)).sum()
    }
}

/// Peak memory of one build.
#[derive(Default)]
struct Memory {
    /// `/usr/bin/time -v`: the largest resident set of the build or any
    /// process it waited for.
    time_max_kib: Option<u64>,
    /// Sampled: each program's highest VmHWM.
    hwm_kib: BTreeMap<String, u64>,
    /// Sampled: the highest sum of VmRSS of all processes running at once.
    together_kib: u64,
}

impl Memory {
    /// The figure the goal is checked against: the larger of the largest
    /// process and everything at once.
    fn peak_kib(&self) -> u64 {
        self.time_max_kib.unwrap_or(0).max(self.together_kib)
    }
}

/// Runs the bench.
pub(super) fn run(project: Option<&std::path::Path>) -> anyhow::Result<()> {
    let project = project.map(std::path::Path::to_path_buf).context(
        "bench build copies the default project: run it inside a slotsmith project (a directory holding images/)",
    )?;
    let exe = std::env::current_exe().context("finding this binary")?;
    let tmp = tempfile::Builder::new()
        .prefix("slotsmith-bench-build-")
        .tempdir()
        .context("creating a temporary directory")?;
    let copy = tmp.path().join("project");
    for d in INPUT_DIRS {
        copy_tree(&project.join(d), &copy.join(d))?;
    }
    eprintln!(
        "bench build: building {IMAGE} from a copy of {} in {}",
        project.display(),
        copy.display()
    );
    let base = base_tarball(&copy)?;
    if let Some(tarball) = &base {
        if !tarball.is_file() {
            // The full build is measured with the Debian base cached: fill
            // that cache first, leaving the stage cache empty.
            eprintln!(
                "bench build: the Debian base {} is not cached yet: one unmeasured build (--no-cache) runs mmdebstrap first",
                tarball.display()
            );
            build(&exe, &copy, "warm-up", true)?;
        }
    }

    let full = build(&exe, &copy, "full", false)?;
    let noop = build(&exe, &copy, "no-op", false)?;
    change_layer_file(&copy)?;
    let layer = build(&exe, &copy, "1 layer", false)?;
    drop_dev_boot_key(&copy)?;
    let key = build(&exe, &copy, "new key", false)?;
    report(&[full, noop, layer, key], base.as_deref());
    Ok(())
}

/// The Debian base tarball the image's plan names in the cache the build
/// uses (`None` for a base that is not Debian).
fn base_tarball(copy: &Path) -> anyhow::Result<Option<PathBuf>> {
    let image = copy.join("images").join(format!("{IMAGE}.yaml"));
    let loaded = slotsmith::load::load_image(&image)?;
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse().ok());
    let plan = slotsmith::plan::plan(&loaded, epoch)?;
    Ok(plan.base.cache_key.map(|k| {
        crate::default_cache(copy)
            .join("debian")
            .join(format!("{k}.tar"))
    }))
}

/// Copies a directory of build inputs: directories, regular files with
/// their modes, and symbolic links as links (layers keep symlinks as data).
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    let entries = fs::read_dir(from).with_context(|| format!("reading {}", from.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", from.display()))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry
            .file_type()
            .with_context(|| format!("reading {}", src.display()))?;
        if kind.is_dir() {
            copy_tree(&src, &dst)?;
        } else if kind.is_file() {
            fs::copy(&src, &dst)
                .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
        } else if kind.is_symlink() {
            let target =
                fs::read_link(&src).with_context(|| format!("reading link {}", src.display()))?;
            std::os::unix::fs::symlink(&target, &dst)
                .with_context(|| format!("creating link {}", dst.display()))?;
        } else {
            bail!(
                "{}: neither a file, a directory nor a symbolic link",
                src.display()
            );
        }
    }
    let mode = fs::metadata(from)
        .with_context(|| format!("reading {}", from.display()))?
        .permissions();
    fs::set_permissions(to, mode).with_context(|| format!("setting the mode of {}", to.display()))
}

/// The one-layer-file change: one line more in a layer file.
fn change_layer_file(copy: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    let path = copy.join(CHANGED_FILE);
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    f.write_all(b"bench build: one changed layer file.\n")
        .with_context(|| format!("writing {}", path.display()))
}

/// The key change: removes the development boot key, so the next build
/// generates a new one and signs with it.
fn drop_dev_boot_key(copy: &Path) -> anyhow::Result<()> {
    let dir = copy.join(slotsmith::signing::DEV_KEY_DIR);
    let private = dir.join("boot.key.pem");
    if !private.is_file() {
        bail!(
            "{}: the build did not generate a development boot key here; the bench's key change needs it",
            private.display()
        );
    }
    for name in ["boot.key.pem", "boot.pub.pem"] {
        let p = dir.join(name);
        if p.exists() {
            fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    Ok(())
}

/// Runs `<this binary> --project COPY build IMAGE --json` as a child,
/// under `/usr/bin/time -v` when installed, sampling the memory of it and
/// its tools, and parses its summary.
fn build(exe: &Path, copy: &Path, label: &'static str, no_cache: bool) -> anyhow::Result<Run> {
    let exe_text = exe
        .to_str()
        .with_context(|| format!("{}: not UTF-8", exe.display()))?;
    let gnu_time = Path::new(GNU_TIME).is_file();
    let tool = if gnu_time {
        Tool::new(GNU_TIME)?.arg("-v").arg(exe_text)
    } else {
        Tool::new(exe_text)?
    };
    let mut tool = tool
        .arg("--project")
        .arg(copy)
        .args(["build", IMAGE, "--json"]);
    if no_cache {
        tool = tool.arg("--no-cache");
    }
    eprintln!("bench build: {label} build ...");
    let sampler = Sampler::start();
    let start = Instant::now();
    let ran = tool.run();
    let wall = start.elapsed().as_secs_f64();
    let sampled = sampler.stop();
    let out = ran.with_context(|| format!("the {label} build"))?;
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("parsing the {label} build's --json summary"))?;

    let mut stages: Vec<(String, f64)> = Vec::new();
    for s in summary["stages"]
        .as_array()
        .context("the build's --json summary has no \"stages\"")?
    {
        let name = s["stage"]
            .as_str()
            .context("a stage without a name in \"stages\"")?;
        let seconds = s["seconds"]
            .as_f64()
            .with_context(|| format!("stage {name} without seconds"))?;
        match stages.iter_mut().find(|(n, _)| n == name) {
            Some((_, total)) => *total += seconds,
            None => stages.push((name.to_string(), seconds)),
        }
    }
    let cache = summary["cache"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("?").to_string()))
                .collect()
        })
        .unwrap_or_default();
    let out_dir = summary["out_dir"]
        .as_str()
        .context("the build's --json summary has no \"out_dir\"")?;
    let sums_path = Path::new(out_dir).join("SHA256SUMS");
    let sums = fs::read(&sums_path).with_context(|| format!("reading {}", sums_path.display()))?;
    let time_max_kib = if gnu_time {
        Some(gnu_time_max_rss(&out.stderr).with_context(|| {
            format!("{GNU_TIME} -v printed no \"Maximum resident set size\" for the {label} build")
        })?)
    } else {
        None
    };
    Ok(Run {
        label,
        wall,
        stages,
        cache,
        sums,
        memory: Memory {
            time_max_kib,
            hwm_kib: sampled.hwm_kib,
            together_kib: sampled.together_kib,
        },
    })
}

/// "Maximum resident set size (kbytes): N" from GNU time's `-v` report.
fn gnu_time_max_rss(stderr: &[u8]) -> Option<u64> {
    String::from_utf8_lossy(stderr)
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
        .and_then(|n| n.trim().parse().ok())
}

/// Samples every descendant of this process from /proc: VmHWM (the
/// kernel's high-water mark, so sampling only has to see a process once
/// before it exits) per program, and the sum of VmRSS at each sample.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Sampled>,
}

#[derive(Default)]
struct Sampled {
    hwm_kib: BTreeMap<String, u64>,
    together_kib: u64,
}

impl Sampler {
    fn start() -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let me = std::process::id();
        let thread = std::thread::spawn(move || {
            let mut s = Sampled::default();
            loop {
                s.sample(me);
                if flag.load(Ordering::Relaxed) {
                    return s;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        });
        Sampler { stop, thread }
    }

    fn stop(self) -> Sampled {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

impl Sampled {
    fn sample(&mut self, root: u32) {
        let mut children: BTreeMap<u32, Vec<(u32, String)>> = BTreeMap::new();
        let Ok(dir) = fs::read_dir("/proc") else {
            return;
        };
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some((comm, ppid)) = fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .as_deref()
                .and_then(parse_stat)
            {
                children.entry(ppid).or_default().push((pid, comm));
            }
        }
        let mut together = 0;
        let mut todo = vec![root];
        while let Some(parent) = todo.pop() {
            for (pid, comm) in children.get(&parent).into_iter().flatten() {
                todo.push(*pid);
                // GNU time itself is the bench's wrapper, not the build.
                if comm == "time" {
                    continue;
                }
                let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
                    continue;
                };
                let hwm = status_kib(&status, "VmHWM:").unwrap_or(0);
                let peak = self.hwm_kib.entry(comm.clone()).or_default();
                *peak = (*peak).max(hwm);
                together += status_kib(&status, "VmRSS:").unwrap_or(0);
            }
        }
        self.together_kib = self.together_kib.max(together);
    }
}

/// The command name and the parent pid from a `/proc/<pid>/stat` line
/// (the name is in parentheses and may itself hold them).
fn parse_stat(stat: &str) -> Option<(String, u32)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let ppid = stat
        .get(close + 1..)?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((comm, ppid))
}

/// A `kB` field of `/proc/<pid>/status`.
fn status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "MISSED"
    }
}

/// Prints the table, the goals and the ratio line.
fn report(runs: &[Run; 4], base: Option<&Path>) {
    let [full, noop, layer, key] = runs;
    println!(
        "bench build: the default image ({IMAGE}) built by `build --json` four times in one run, on a copy of the project"
    );
    match base {
        Some(t) => println!("  Debian base tarball cached: {}", t.display()),
        None => println!("  the base is not Debian: no tarball cache"),
    }
    println!(
        "  runs: full = empty stage cache; no-op = nothing changed; 1 layer = {CHANGED_FILE} edited; new key = development boot key regenerated"
    );
    println!();

    // Stage seconds, one column per run.
    let mut names: Vec<&str> = Vec::new();
    for r in runs {
        for (n, _) in &r.stages {
            if !names.contains(&n.as_str()) {
                names.push(n);
            }
        }
    }
    let head: Vec<String> = runs.iter().map(|r| format!("{:>9}", r.label)).collect();
    println!("  {:<22}{}", "seconds", head.join(""));
    for n in &names {
        let cells: Vec<String> = runs
            .iter()
            .map(|r| match r.stage(n) {
                Some(s) => format!("{s:>9.2}"),
                None => format!("{:>9}", "-"),
            })
            .collect();
        println!("  {n:<22}{}", cells.join(""));
    }
    let row = |name: &str, f: &dyn Fn(&Run) -> String| {
        let cells: Vec<String> = runs.iter().map(|r| format!("{:>9}", f(r))).collect();
        println!("  {name:<22}{}", cells.join(""));
    };
    row("slot image stages", &|r| format!("{:.2}", r.slot_image()));
    row("sum of stages", &|r| format!("{:.2}", r.stage_sum()));
    row("wall (whole command)", &|r| format!("{:.2}", r.wall));
    // Process start, load, plan, keys, locks, and the work directory's
    // removal after publishing: time no stage accounts for.
    row("outside stages", &|r| {
        format!("{:.2}", r.wall - r.stage_sum())
    });
    row("vs full (wall)", &|r| format!("{:.3}x", r.wall / full.wall));
    println!();

    // Stage cache outcomes, in the build's order where known.
    let mut cached: Vec<&str> = Vec::new();
    for r in runs {
        for k in r.cache.keys() {
            if !cached.contains(&k.as_str()) {
                cached.push(k);
            }
        }
    }
    cached.sort_by_key(|k| {
        CACHE_ORDER
            .iter()
            .position(|o| o == k)
            .unwrap_or(usize::MAX)
    });
    if cached.is_empty() {
        println!("  stage cache: the build's --json summary has no \"cache\"");
    } else {
        println!("  {:<22}{}", "stage cache", head.join(""));
        for k in &cached {
            row(k, &|r| {
                r.cache.get(*k).cloned().unwrap_or_else(|| "-".into())
            });
        }
    }
    println!();

    // Peak memory, every run.
    row("peak RSS, largest", &|r| match r.memory.time_max_kib {
        Some(k) => format!("{:.0}M", k as f64 / 1024.0),
        None => "n/a".into(),
    });
    row("peak RSS, at once", &|r| {
        format!("{:.0}M", r.memory.together_kib as f64 / 1024.0)
    });
    let per_program: Vec<String> = full
        .memory
        .hwm_kib
        .iter()
        .map(|(p, k)| format!("{p} {}", mib(*k)))
        .collect();
    println!(
        "  full build, each program's VmHWM (sampled): {}",
        if per_program.is_empty() {
            "nothing sampled".to_string()
        } else {
            per_program.join(", ")
        }
    );
    match full.memory.time_max_kib {
        Some(k) => println!(
            "  full build, {GNU_TIME} -v maximum resident set size: {}",
            mib(k)
        ),
        None => println!("  {GNU_TIME} is not installed: only the sampled figures"),
    }
    println!();

    // The key change: which stages ran again, by the cache's account and
    // by the stage timings (a stage absent from them did not run).
    let (mut reran, mut reused) = (Vec::new(), Vec::new());
    for k in &cached {
        match key.cache.get(*k).map(String::as_str) {
            Some("hit") => reused.push(*k),
            Some(v) => reran.push(format!("{k} ({v})")),
            None => {}
        }
    }
    let not_run: Vec<&str> = names
        .iter()
        .filter(|n| key.stage(n).is_none())
        .copied()
        .collect();
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    println!(
        "  new key: stage cache re-ran {}, reused {}; stages not run at all: {}",
        list(&reran),
        list(&reused.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
        list(&not_run.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    );
    println!(
        "  no-op rebuild published the same bytes as the full build (SHA256SUMS): {}",
        if noop.sums == full.sums { "yes" } else { "NO" }
    );
    println!();

    // The goals.
    let rootfs = full.slot_image();
    let layer_goal = rootfs + LAYER_SLACK_S;
    let full_ratio = full.wall / rootfs;
    let peak_mib = full.memory.peak_kib() as f64 / 1024.0;
    println!("  goals (issue 9):");
    println!(
        "    no-op rebuild              {:>9.2} s   <= {NOOP_GOAL_S:.2} s   {}",
        noop.wall,
        verdict(noop.wall <= NOOP_GOAL_S)
    );
    println!(
        "    one-layer-file change      {:>9.2} s   <= {layer_goal:.2} s (slot image stages {rootfs:.2} s + {LAYER_SLACK_S:.0} s)   {}",
        layer.wall,
        verdict(layer.wall <= layer_goal)
    );
    println!(
        "    full build / slot image    {full_ratio:>9.2} x   <= {FULL_OVER_ROOTFS_GOAL:.2} x ({:.2} s / {rootfs:.2} s)   {}",
        full.wall,
        verdict(full_ratio <= FULL_OVER_ROOTFS_GOAL)
    );
    println!(
        "    peak memory, full build    {peak_mib:>9.1} MiB <= {PEAK_GOAL_MIB:.0} MiB (larger of largest process and all at once)   {}",
        verdict(peak_mib <= PEAK_GOAL_MIB)
    );
    println!();
    println!(
        "ratios: no-op/goal {:.2}, 1-layer/goal {:.2}, full/slot-image {full_ratio:.2} (goal {FULL_OVER_ROOTFS_GOAL:.2}), peak/goal {:.2}; vs full build: no-op {:.3}x, 1-layer {:.2}x, new key {:.2}x",
        noop.wall / NOOP_GOAL_S,
        layer.wall / layer_goal,
        peak_mib / PEAK_GOAL_MIB,
        noop.wall / full.wall,
        layer.wall / full.wall,
        key.wall / full.wall
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_give_the_name_and_parent_even_with_parentheses_in_the_name() {
        assert_eq!(
            parse_stat("4242 (tar2sqfs) S 4241 4242 1 0 -1"),
            Some(("tar2sqfs".to_string(), 4241))
        );
        assert_eq!(
            parse_stat("7 (a) b) (c) R 1 7 7"),
            Some(("a) b) (c".to_string(), 1))
        );
        assert_eq!(parse_stat("7 no parentheses"), None);
    }

    #[test]
    fn status_and_gnu_time_fields_are_read_in_kib() {
        let status = "Name:\txtask\nVmHWM:\t  123456 kB\nVmRSS:\t   1000 kB\n";
        assert_eq!(status_kib(status, "VmHWM:"), Some(123456));
        assert_eq!(status_kib(status, "VmRSS:"), Some(1000));
        assert_eq!(status_kib(status, "VmSwap:"), None);
        let time = b"==> rootfs\n\tCommand being timed: \"xtask build\"\n\tMaximum resident set size (kbytes): 204800\n\tExit status: 0\n";
        assert_eq!(gnu_time_max_rss(time), Some(204800));
        assert_eq!(gnu_time_max_rss(b"no report"), None);
    }
}
