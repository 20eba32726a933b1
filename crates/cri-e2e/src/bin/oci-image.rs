//! `make image`: the DaemonSet's image as an OCI image layout archive, built offline
//! (no Docker engine, no registry) from a statically linked `multus` binary.
//!
//! The image holds `/usr/bin/multus` and nothing else: the binary needs no libc, no
//! shell and no CA bundle at run time (the installer only writes node files; the plugin
//! runs on the host, with the kubeconfig's CA). `ctr -n k8s.io images import` loads it;
//! `skopeo copy oci-archive:... docker://...` pushes it.

#[path = "../oci.rs"]
#[allow(dead_code)]
mod oci;

use std::path::PathBuf;

use anyhow::{Context, Result, ensure};
use clap::Parser;
use serde_json::json;

#[derive(Debug, Parser)]
#[command(name = "oci-image", about = "Packs a static multus binary as the DaemonSet's OCI image archive")]
struct Options {
    /// The statically linked multus binary.
    #[arg(long)]
    binary: PathBuf,
    /// The image reference recorded in the archive (what `ctr images import` names it).
    #[arg(long)]
    name: String,
    /// The archive to write.
    #[arg(long)]
    out: PathBuf,
    /// The git commit, as a label.
    #[arg(long, default_value = "unknown")]
    revision: String,
}

fn main() -> Result<()> {
    let options = Options::parse();
    let binary = std::fs::read(&options.binary).with_context(|| format!("reading {}", options.binary.display()))?;
    ensure!(
        !has_interpreter(&binary)?,
        "{} is dynamically linked: the image has no libc (build with -C target-feature=+crt-static)",
        options.binary.display()
    );
    let files = [
        oci::TarEntry { path: "usr/", mode: 0o755, data: b"" },
        oci::TarEntry { path: "usr/bin/", mode: 0o755, data: b"" },
        oci::TarEntry { path: "usr/bin/multus", mode: 0o755, data: &binary },
    ];
    // Root, not 65532: `multus install` writes root-owned host directories (/opt/cni/bin,
    // /etc/cni/net.d) through hostPath mounts, as every CNI installer does.
    let config = json!({
        "Entrypoint": ["/usr/bin/multus", "install"],
        "User": "0:0",
        "WorkingDir": "/",
        "Labels": {
            "org.opencontainers.image.title": "multus-rs",
            "org.opencontainers.image.description": "Multus CNI thin plugin (Rust): `multus install` DaemonSet image",
            "org.opencontainers.image.version": env!("CARGO_PKG_VERSION"),
            "org.opencontainers.image.revision": options.revision,
            "org.opencontainers.image.licenses": "Apache-2.0",
        },
    });
    let archive = oci::image_archive(&files, config, &options.name)?;
    let tmp = options.out.with_extension("tar.tmp");
    std::fs::write(&tmp, &archive)?;
    std::fs::rename(&tmp, &options.out)?;
    println!("{}: {} ({} bytes, binary {} bytes)", options.out.display(), options.name, archive.len(), binary.len());
    Ok(())
}

/// Whether the ELF file asks for a program interpreter (ld.so): a PT_INTERP header.
fn has_interpreter(elf: &[u8]) -> Result<bool> {
    ensure!(elf.len() >= 64 && elf.starts_with(b"\x7fELF") && elf[4] == 2 && elf[5] == 1, "not a 64-bit LE ELF file");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into()?) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let header = elf.get(at..at + 4).context("truncated program header")?;
        if u32::from_le_bytes(header.try_into()?) == 3 {
            return Ok(true);
        }
    }
    Ok(false)
}
