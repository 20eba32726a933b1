//! Manifests in, kubeconfig and address files out.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Reads every manifest document of a file, or of the `*.yaml`, `*.yml` and
/// `*.json` files of a directory in name order. `kind: List` is unpacked and
/// empty documents are skipped.
pub(crate) fn read_manifests(path: &Path) -> io::Result<Vec<Value>> {
    let files = if path.is_dir() {
        let mut files: Vec<PathBuf> =
            fs::read_dir(path)?.map(|entry| entry.map(|e| e.path())).collect::<io::Result<_>>()?;
        files.retain(|f| f.is_file() && matches!(extension(f), "yaml" | "yml" | "json"));
        files.sort();
        files
    } else {
        vec![path.to_owned()]
    };
    let mut documents = Vec::new();
    for file in files {
        let text = fs::read_to_string(&file)?;
        let invalid = |err: String| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {err}", file.display()));
        let parsed: Vec<Value> = if extension(&file) == "json" {
            vec![serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?]
        } else {
            serde_saphyr::from_multiple(&text).map_err(|e| invalid(e.to_string()))?
        };
        for doc in parsed {
            match doc.get("items").and_then(Value::as_array) {
                Some(items) if doc.get("kind").and_then(Value::as_str) == Some("List") => {
                    documents.extend(items.iter().cloned());
                }
                _ if doc.is_null() => {}
                _ => documents.push(doc),
            }
        }
    }
    Ok(documents)
}

fn extension(path: &Path) -> &str {
    path.extension().and_then(|e| e.to_str()).unwrap_or("")
}

/// A kubeconfig with one cluster, user and context, all named `standin`.
pub(crate) fn kubeconfig(server: &str, token: &str, ca_pem: Option<&str>) -> String {
    use base64::Engine as _;
    // JSON string literals are valid YAML double-quoted scalars.
    let quote = |s: &str| Value::from(s).to_string();
    let ca = ca_pem
        .map(|pem| {
            let data = base64::engine::general_purpose::STANDARD.encode(pem);
            format!("\n    certificate-authority-data: {data}")
        })
        .unwrap_or_default();
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: standin
  cluster:
    server: {server}{ca}
users:
- name: standin
  user:
    token: {token}
contexts:
- name: standin
  context:
    cluster: standin
    user: standin
    namespace: default
current-context: standin
preferences: {{}}
",
        server = quote(server),
        token = quote(token),
    )
}

/// Writes `contents` with mode 0600, atomically (temporary file + rename),
/// so that a script waiting for the file never reads half of it.
pub(crate) fn write_private(path: &Path, contents: &str) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{}: not a file path", path.display())))?;
    let mut temporary = path.to_owned();
    temporary.set_file_name(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let mut file = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temporary)?;
    // `mode` only applies to new files; a leftover temporary may be looser.
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    fs::rename(&temporary, path)
}
