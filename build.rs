//! Packs `files/bundle/` into the bundle archive that is embedded in the
//! binary: a deterministic tar whose first member, `SHA256SUMS`, lists the
//! SHA-256 of every other member. The digest of `SHA256SUMS` itself is
//! compiled in, so a bundle on disk must match this build exactly.

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .expect("reading files/bundle")
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if p.is_dir() {
            walk(base, &p, out);
        } else {
            let rel = p
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            out.push((rel, p));
        }
    }
}

fn append(builder: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    builder
        .append_data(&mut h, path, data)
        .expect("appending to the bundle");
}

fn git(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The commit for `sightline --version`. A package build from a source
/// tarball has no git: it passes SIGHTLINE_GIT_COMMIT instead.
fn record_commit() {
    println!("cargo:rerun-if-env-changed=SIGHTLINE_GIT_COMMIT");
    let commit = std::env::var("SIGHTLINE_GIT_COMMIT")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            // Rebuild when HEAD moves: HEAD itself, the branch it points to,
            // and packed-refs (a worktree's HEAD lives outside `.git/`).
            for p in ["HEAD", "packed-refs"] {
                if let Some(path) = git(&["rev-parse", "--git-path", p]) {
                    println!("cargo:rerun-if-changed={path}");
                }
            }
            if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"])
                && let Some(path) = git(&["rev-parse", "--git-path", &r])
            {
                println!("cargo:rerun-if-changed={path}");
            }
            git(&["rev-parse", "--short=12", "HEAD"])
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SIGHTLINE_GIT_COMMIT={commit}");
}

fn main() {
    record_commit();
    let base = Path::new("files/bundle");
    println!("cargo:rerun-if-changed=files/bundle");
    let mut files = Vec::new();
    walk(base, base, &mut files);
    let mut sums = String::new();
    let mut contents = Vec::new();
    for (rel, p) in &files {
        let data = fs::read(p).expect("reading a bundle file");
        sums.push_str(&format!("{}  {rel}\n", hex::encode(Sha256::digest(&data))));
        contents.push((rel.clone(), data));
    }
    let mut builder = tar::Builder::new(Vec::new());
    append(&mut builder, "SHA256SUMS", sums.as_bytes());
    for (rel, data) in &contents {
        append(&mut builder, rel, data);
    }
    let tar = builder.into_inner().expect("finishing the bundle");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("bundle.tar");
    fs::write(&out, tar).expect("writing the bundle");
    println!(
        "cargo:rustc-env=SIGHTLINE_BUNDLE_SUMS_SHA256={}",
        hex::encode(Sha256::digest(sums.as_bytes()))
    );
}
