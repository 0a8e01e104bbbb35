//! Content digests: the one hash sightline records for files, stages and
//! the bundle.

use sha2::{Digest, Sha256};

/// Lower-case hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Digest over (path, sha256) pairs, independent of their order; `None` for
/// an empty set.
pub fn digest_of<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Option<String> {
    let mut v: Vec<_> = pairs.collect();
    if v.is_empty() {
        return None;
    }
    v.sort();
    let joined: String = v.iter().map(|(p, h)| format!("{p}\0{h}\n")).collect();
    Some(sha256_hex(joined.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_ignores_order_and_sees_content() {
        let a = digest_of([("/a", "1"), ("/b", "2")].into_iter()).unwrap();
        let b = digest_of([("/b", "2"), ("/a", "1")].into_iter()).unwrap();
        let c = digest_of([("/b", "3"), ("/a", "1")].into_iter()).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(digest_of(std::iter::empty()), None);
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
