//! Records the git commit for `multus --version`, and compiles the kubelet pod-resources
//! v1 proto (`proto/podresources/v1/api.proto`) with protoc (Debian's protobuf-compiler,
//! installed by the Makefile), as crates/cri-e2e does: client and server stubs, no tonic
//! transport code (the plugin dials the unix socket itself; only tests serve the API).
fn main() {
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=MULTUS_GIT_COMMIT={commit}");

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .compile_protos(&["proto/podresources/v1/api.proto"], &["proto"])
        .expect("compiling proto/podresources/v1/api.proto (needs protoc: apt-get install protobuf-compiler)");
}
