//! Root smoke test of `bench start`: the product, the floor and LXC variants start, answer and stop, and
//! the report holds their timings and ratios. Skips a variant, saying why, where its command is missing.

use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use vserver_lab::bench::{run_start, StartOptions, Variant};
use vserver_lab::skip_unless_root;

fn has_lxc() -> bool {
    Command::new("lxc-create")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn every_variant_starts_two_services_that_answer_then_stop() {
    if skip_unless_root("every_variant_starts_two_services_that_answer_then_stop") {
        return;
    }
    let mut variants = vec![Variant::Floor];
    if vserver_lab::vserver_bin().is_some() {
        variants.insert(0, Variant::Vserver);
    } else {
        eprintln!("vserver part skipped: no vserver binary beside the test (cargo build -p node-agent)");
    }
    if has_lxc() {
        variants.push(Variant::Lxc);
    } else {
        eprintln!("lxc part skipped: no lxc-create (apt-get install lxc)");
    }
    let options = StartOptions { count: 2, variants: variants.clone(), answer_timeout: Duration::from_secs(20) };
    let report = run_start(&options, &AtomicBool::new(false)).unwrap();
    assert_eq!(report.variants.len(), variants.len());
    for v in &report.variants {
        assert_eq!(v.error, None, "{:?} failed", v.variant);
        assert_eq!(v.runs, 2);
        assert_eq!(v.stop_ms.len(), 2);
        assert!(v.median_start_ms.is_some_and(|ms| ms > 0.0));
    }
    let table = report.table();
    assert!(table.contains("faster than LXC:"), "{table}");
    if variants.contains(&Variant::Vserver) && variants.contains(&Variant::Lxc) {
        assert!(table.contains("vserver/lxc"), "the ratio against LXC is printed: {table}");
    }
}

#[test]
fn an_interrupted_run_says_so() {
    if skip_unless_root("an_interrupted_run_says_so") {
        return;
    }
    let options = StartOptions { count: 1, variants: vec![Variant::Floor], answer_timeout: Duration::from_secs(5) };
    let err = run_start(&options, &AtomicBool::new(true)).unwrap_err();
    assert!(err.is::<vserver_lab::bench::Interrupted>(), "{err:#}");
}
