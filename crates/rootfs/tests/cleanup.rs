//! `remove_tree` under a low descriptor limit, alone in its own test
//! binary: the limit is per process, and no other test may run beside it.

use std::fs;

use slotsmith_rootfs::cleanup::remove_tree;

#[test]
fn depth_does_not_cost_file_descriptors() {
    // Over 1000 levels under a descriptor limit of 64: remove_dir_all would
    // need one descriptor per level.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("deep");
    let mut p = root.clone();
    fs::create_dir(&p).unwrap();
    let mut depth_made = 0;
    for i in 0..3000 {
        p.push("d");
        if p.as_os_str().len() > 3800 {
            break;
        }
        fs::create_dir(&p).unwrap();
        depth_made = i + 1;
    }
    assert!(depth_made > 1000, "{depth_made}");
    let old = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(64),
            maximum: old.maximum,
        },
    )
    .unwrap();
    let res = remove_tree(&root);
    rustix::process::setrlimit(rustix::process::Resource::Nofile, old).unwrap();
    res.unwrap();
    assert!(!root.exists());
}
