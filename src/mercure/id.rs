//! Ids the hub makes for updates published without one: `urn:uuid:` and a random (version 4)
//! UUID, as the reference hub makes them.

use std::fmt::Write;

use crate::event::EventId;

/// A fresh `urn:uuid:<v4>` id.
///
/// # Errors
///
/// When the operating system gives no randomness (it practically never fails).
pub(crate) fn generate() -> Result<EventId, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes)?;
    Ok(urn(bytes))
}

/// The `urn:uuid:` id of the version 4 UUID made of `random`.
fn urn(mut random: [u8; 16]) -> EventId {
    random[6] = (random[6] & 0x0f) | 0x40; // version 4
    random[8] = (random[8] & 0x3f) | 0x80; // RFC 4122 variant
    let mut id = String::with_capacity(45);
    id.push_str("urn:uuid:");
    for (i, byte) in random.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            id.push('-');
        }
        // Writing to a String cannot fail.
        let _ = write!(id, "{byte:02x}");
    }
    EventId::from_trusted(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_version_4_uuid_urns() {
        let id = urn([0xff; 16]);
        assert_eq!(id.as_str(), "urn:uuid:ffffffff-ffff-4fff-bfff-ffffffffffff");
        let id = urn([0; 16]);
        assert_eq!(id.as_str(), "urn:uuid:00000000-0000-4000-8000-000000000000");
    }

    #[test]
    fn generated_ids_differ() {
        let a = generate().expect("randomness");
        let b = generate().expect("randomness");
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 45);
    }
}
