//! The sandbox ("pause") image, built here without a registry: a static C program
//! packed as a one-layer OCI image archive that `ctr images import` accepts.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::json;

/// The pause program: sleeps until SIGINT/SIGTERM and reaps children, like k8s' pause.
const PAUSE_C: &str = include_str!("pause.c");

/// Compiles `pause.c` statically with gcc into `out`.
pub fn build_pause(work: &Path, out: &Path) -> Result<()> {
    let source = work.join("pause.c");
    std::fs::write(&source, PAUSE_C)?;
    let output = Command::new("gcc")
        .args(["-static", "-O2", "-s", "-o"])
        .arg(out)
        .arg(&source)
        .output()
        .context("running gcc (Debian's gcc is needed to build the pause image)")?;
    ensure!(output.status.success(), "gcc -static pause.c failed: {}", String::from_utf8_lossy(&output.stderr));
    Ok(())
}

/// One regular file of a tar archive.
pub struct TarEntry<'a> {
    pub path: &'a str,
    pub mode: u32,
    pub data: &'a [u8],
}

/// A ustar archive of regular files and directories (a path ending in `/`).
pub fn tar(entries: &[TarEntry<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in entries {
        assert!(entry.path.len() < 100, "tar path too long: {}", entry.path);
        let mut header = [0u8; 512];
        let mut field = |offset: usize, value: &[u8]| header[offset..offset + value.len()].copy_from_slice(value);
        field(0, entry.path.as_bytes());
        field(100, format!("{:07o}\0", entry.mode).as_bytes());
        field(108, b"0000000\0"); // uid
        field(116, b"0000000\0"); // gid
        field(124, format!("{:011o}\0", entry.data.len()).as_bytes());
        field(136, b"00000000000\0"); // mtime: reproducible
        field(148, b"        "); // checksum placeholder: spaces
        field(156, if entry.path.ends_with('/') { b"5" } else { b"0" }); // directory or regular file
        field(257, b"ustar\0");
        field(263, b"00");
        let checksum: u32 = header.iter().map(|&b| u32::from(b)).sum();
        header[148..156].copy_from_slice(format!("{checksum:06o}\0 ").as_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(entry.data);
        out.resize(out.len().next_multiple_of(512), 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

fn sha256(data: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The GOARCH name of this machine.
fn goarch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// An OCI image layout archive (`oci-layout`, `index.json`, `blobs/sha256/...`) of one
/// image named `name` whose single layer holds `/pause`, its entrypoint.
pub fn pause_image_archive(pause_binary: &[u8], name: &str) -> Result<Vec<u8>> {
    let files = [TarEntry { path: "pause", mode: 0o755, data: pause_binary }];
    image_archive(&files, json!({"Entrypoint": ["/pause"], "User": "65535:65535"}), name)
}

/// An OCI image layout archive of one image named `name`: a single layer of `files`,
/// and `runtime_config` as the image config's `config` (Entrypoint, User, Labels, ...).
pub fn image_archive(files: &[TarEntry<'_>], runtime_config: serde_json::Value, name: &str) -> Result<Vec<u8>> {
    let layer_tar = tar(files);
    let mut gz = GzEncoder::new(Vec::new(), Compression::best());
    gz.write_all(&layer_tar)?;
    let layer = gz.finish()?;
    let config = serde_json::to_vec(&json!({
        "architecture": goarch(),
        "os": "linux",
        "config": runtime_config,
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha256(&layer_tar))]},
    }))?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{}", sha256(&config)), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": format!("sha256:{}", sha256(&layer)), "size": layer.len()}],
    }))?;
    let tag = name.rsplit_once(':').map_or("latest", |(_, tag)| tag);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", sha256(&manifest)), "size": manifest.len(),
            "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag},
        }],
    }))?;
    let blob_paths: Vec<String> =
        [&layer, &config, &manifest].iter().map(|b| format!("blobs/sha256/{}", sha256(b))).collect();
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    Ok(tar(&[
        TarEntry { path: "oci-layout", mode: 0o644, data: layout },
        TarEntry { path: "index.json", mode: 0o644, data: &index },
        TarEntry { path: &blob_paths[0], mode: 0o644, data: &layer },
        TarEntry { path: &blob_paths[1], mode: 0o644, data: &config },
        TarEntry { path: &blob_paths[2], mode: 0o644, data: &manifest },
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_empty_input() {
        assert_eq!(sha256(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn tar_headers_are_valid_ustar() {
        let archive = tar(&[TarEntry { path: "a/b", mode: 0o755, data: b"hello" }]);
        assert_eq!(archive.len(), 512 + 512 + 1024);
        assert_eq!(&archive[0..3], b"a/b");
        assert_eq!(&archive[257..263], b"ustar\0");
        assert_eq!(&archive[124..136], b"00000000005\0");
        let mut header = archive[..512].to_vec();
        let stored = u32::from_str_radix(std::str::from_utf8(&header[148..154]).unwrap(), 8).unwrap();
        header[148..156].copy_from_slice(b"        ");
        assert_eq!(stored, header.iter().map(|&b| u32::from(b)).sum::<u32>());
        assert_eq!(&archive[512..517], b"hello");
    }

    #[test]
    fn system_tar_reads_the_image_archive() {
        let archive = pause_image_archive(b"#!binary", "registry.invalid/x/pause:3").unwrap();
        let dir = std::env::temp_dir().join(format!("cri-e2e-oci-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("image.tar");
        std::fs::write(&path, &archive).unwrap();
        let listing = Command::new("tar").arg("-tf").arg(&path).output().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(listing.status.success());
        let names = String::from_utf8(listing.stdout).unwrap();
        assert!(names.starts_with("oci-layout\nindex.json\nblobs/sha256/"), "{names}");
        assert_eq!(names.lines().count(), 5);
    }
}
