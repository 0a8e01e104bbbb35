//! Packs files/bundle into the bundle archive embedded in the binary.
fn main() {
    println!("cargo:rerun-if-changed=files");
}
