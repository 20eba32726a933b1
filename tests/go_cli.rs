//! Go Multus' command line, as operators and scripts use it, through the built binary.

mod support;

fn multus(args: &[&str]) -> std::process::Output {
    support::multus_cli(args).output().unwrap()
}

#[test]
fn go_version_flags_print_the_version() {
    for flag in ["-version", "-v", "--version", "version"] {
        let out = multus(&[flag]);
        assert!(out.status.success(), "multus {flag}: {}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(stdout.starts_with("multus-rs: version:"), "multus {flag}: {stdout:?}");
    }
}

#[test]
fn no_arguments_points_to_help() {
    let out = multus(&[]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty(), "stdout is the CNI protocol: nothing there without CNI_COMMAND");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("CNI protocol versions supported"), "{stderr}");
    assert!(stderr.contains("multus --help"), "{stderr}");
}

#[test]
fn install_accepts_go_only_flags_with_a_warning() {
    // A conf dir that does not exist: the flags parse, the check of the dirs fails after.
    let out = multus(&[
        "install",
        "--multus-bin-file=/usr/src/multus-cni/bin/multus",
        "--rename-conf-file=true",
        "--cni-conf-dir=/nonexistent-go-cli-test",
    ]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success());
    assert!(!stderr.contains("unexpected argument"), "{stderr}");
    assert!(stderr.contains("--multus-bin-file=/usr/src/multus-cni/bin/multus is ignored"), "{stderr}");
    assert!(stderr.contains("--rename-conf-file is ignored"), "{stderr}");
    assert!(stderr.contains("--cni-conf-dir /nonexistent-go-cli-test is not a directory"), "{stderr}");
}
