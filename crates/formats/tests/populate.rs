//! `TensorSource::populate` maps a tensor's pages into the process: reading them afterwards
//! takes no page fault, where reading another tensor of the same fresh map does. The faults
//! are the process's minor-fault count (`getrusage`), so this binary holds one test: no other
//! test thread faults meanwhile.

#![cfg(target_os = "linux")]

use frugal_formats::gguf::GgufFile;
use frugal_formats::TensorSource;

/// Minor page faults of this process so far.
fn minor_faults() -> i64 {
    let mut u = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `u` is a writable rusage; RUSAGE_SELF is a valid target.
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_SELF, u.as_mut_ptr()) },
        0
    );
    // SAFETY: getrusage succeeded, so it filled `u`.
    unsafe { u.assume_init() }.ru_minflt
}

/// Reads one byte of every 4 KiB of `bytes`, returning the faults that took.
fn faults_reading(bytes: &[u8]) -> i64 {
    let before = minor_faults();
    let mut sum = 0u8;
    for i in (0..bytes.len()).step_by(4096) {
        // SAFETY: `i` is in bounds; a volatile read keeps the load.
        sum = sum.wrapping_add(unsafe { std::ptr::read_volatile(&bytes[i]) });
    }
    std::hint::black_box(sum);
    minor_faults() - before
}

/// `MADV_POPULATE_READ` is Linux 5.14 and later; before it `populate` only hints.
fn kernel_has_populate() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut v = release
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
    (major, minor) >= (5, 14)
}

#[test]
fn populated_tensor_reads_without_faults() {
    if !kernel_has_populate() {
        eprintln!("kernel before 5.14: no MADV_POPULATE_READ, nothing to check");
        return;
    }
    let path =
        frugal_testdata::workspace_root().join("fixtures/gguf/deepseek-v3/deepseek-v3-F32.gguf");
    let file = GgufFile::open(&path).unwrap();
    // The two largest tensors, far enough apart that the kernel's fault-around (up to 64 KiB
    // around a faulting address) for one cannot map the other.
    let mut views: Vec<_> = file
        .tensor_infos()
        .iter()
        .map(|t| file.tensor(&t.name).unwrap().data)
        .collect();
    views.sort_by_key(|d| std::cmp::Reverse(d.len()));
    let a = views[0];
    let at = |d: &[u8]| file.offset_of(d).unwrap() as i64;
    let b: &[u8] = views[1..]
        .iter()
        .copied()
        .find(|&d| {
            let (lo, hi) = if at(d) < at(a) { (d, a) } else { (a, d) };
            at(hi) - (at(lo) + lo.len() as i64) > 256 << 10
        })
        .expect("two tensors 256 KiB apart in the fixture");
    assert!(
        a.len() >= 64 << 10 && b.len() >= 16 << 10,
        "fixture tensors too small"
    );

    // The control: a fresh map faults.
    let control = faults_reading(b);
    assert!(control > 0, "reading an untouched tensor took no fault");
    file.populate(a);
    let populated = faults_reading(a);
    eprintln!("faults: unpopulated {control}, populated {populated}");
    assert_eq!(populated, 0, "reading a populated tensor faulted");
}
