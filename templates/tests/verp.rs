//! VERP return paths: round trip, forged and tampered addresses refused, garbage never panics.

use mailfarm_templates::{VerpError, VerpSigner, VerpToken, MAX_CAMPAIGN_ID_LEN};
use rand::{Rng, SeedableRng};

const KEY: &[u8] = b"another secret key for the tests";

fn token(campaign: &str, id: u64) -> VerpToken {
    VerpToken {
        campaign_id: campaign.into(),
        recipient_id: id,
    }
}

#[test]
fn round_trip_and_format() {
    let signer = VerpSigner::new(KEY);
    for (campaign, id) in [
        ("autumn-2026", 0u64),
        ("a", 1),
        ("Mixed_Case-id", 123_456_789),
        (&"z".repeat(MAX_CAMPAIGN_ID_LEN), u64::MAX),
    ] {
        let address = signer.return_path(campaign, id, "bounces.acme.example");
        let (local, domain) = address.rsplit_once('@').expect("@");
        assert_eq!(domain, "bounces.acme.example");
        assert!(local.len() <= 64, "{local}");
        assert!(local.starts_with(&format!("b-{campaign}-")), "{local}");
        let sig = local.rsplit('-').next().expect("sig");
        assert_eq!(sig.len(), 16, "80-bit signature in base32");
        assert!(sig
            .bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)));
        assert_eq!(signer.verify(&address), Ok(token(campaign, id)));
        // Angle brackets, surrounding space and any case of the domain are accepted.
        let bracketed = format!(" <{local}@{}> ", domain.to_uppercase());
        assert_eq!(signer.verify(&bracketed), Ok(token(campaign, id)));
        assert_eq!(
            signer.verify_for_domain(&bracketed, "Bounces.Acme.Example"),
            Ok(token(campaign, id))
        );
        assert!(matches!(
            signer.verify_for_domain(&address, "other.example"),
            Err(VerpError::WrongDomain { .. })
        ));
    }
    // Recipient id in base36.
    let address = signer.return_path("c", 36 * 36, "b.example");
    assert!(address.starts_with("b-c-100-"), "{address}");
}

#[test]
fn forged_and_tampered_addresses_are_refused() {
    let signer = VerpSigner::new(KEY);
    let address = signer.return_path("autumn-2026", 987_654, "bounces.acme.example");
    let local_len = address.find('@').expect("@");

    // Another key: forged.
    let forger = VerpSigner::new(b"a guess at the key");
    let forged = forger.return_path("autumn-2026", 987_654, "bounces.acme.example");
    assert_eq!(signer.verify(&forged), Err(VerpError::BadSignature));

    // Every single-character change of the local part is refused.
    let replacements = b"0129azAZ_-.x7";
    let mut tried = 0;
    for pos in 0..local_len {
        for &r in replacements {
            let mut bytes = address.clone().into_bytes();
            if bytes[pos] == r {
                continue;
            }
            bytes[pos] = r;
            let tampered = String::from_utf8(bytes).expect("ascii");
            tried += 1;
            assert!(
                signer.verify(&tampered).is_err(),
                "tampered address accepted: {tampered}"
            );
        }
        // Upper-casing a character is a change too.
        let mut bytes = address.clone().into_bytes();
        if bytes[pos].is_ascii_lowercase() {
            bytes[pos] = bytes[pos].to_ascii_uppercase();
            let tampered = String::from_utf8(bytes).expect("ascii");
            assert!(signer.verify(&tampered).is_err(), "{tampered}");
        }
    }
    assert!(tried > 300);

    // A signature moved to another recipient or campaign does not fit.
    let other = signer.return_path("autumn-2026", 987_655, "bounces.acme.example");
    let sig_of_other = other[..other.find('@').expect("@")]
        .rsplit('-')
        .next()
        .expect("sig");
    let (head, _) = address[..local_len].rsplit_once('-').expect("sig");
    let swapped = format!("{head}-{sig_of_other}@bounces.acme.example");
    assert_eq!(signer.verify(&swapped), Err(VerpError::BadSignature));
    let renamed = address.replacen("autumn-2026", "autumn-2027", 1);
    assert_eq!(signer.verify(&renamed), Err(VerpError::BadSignature));

    // Non-canonical id (leading zero) and odd shapes.
    let padded = address.replacen("-", "-0", 2).replacen("b-0", "b-", 1);
    assert!(signer.verify(&padded).is_err(), "{padded}");
    for bad in [
        "",
        "@",
        "b-@x.example",
        "b-c-1-@x.example",
        "b-c-1-aaaaaaaaaaaaaaaa",
        "x-c-1-aaaaaaaaaaaaaaaa@x.example",
        "b--1-aaaaaaaaaaaaaaaa@x.example",
        "b-c--aaaaaaaaaaaaaaaa@x.example",
        "b-c-1-aaaaaaaaaaaaaaaa@",
        "b-c-1-aaaaaaaaaaaaaaaa@x..example",
        "<b-c-1-aaaaaaaaaaaaaaaa@x.example",
        "b-c-zzzzzzzzzzzzz-aaaaaaaaaaaaaaaa@x.example",
        "b-c-1-aaaaaaaaaaaaaaa1@x.example",
    ] {
        assert!(
            matches!(signer.verify(bad), Err(VerpError::Malformed(_))),
            "{bad:?}: {:?}",
            signer.verify(bad)
        );
    }
    assert_eq!(
        signer.verify("b-c-1-aaaaaaaaaaaaaaaa@x.example"),
        Err(VerpError::BadSignature)
    );
}

#[test]
fn random_input_never_panics() {
    let signer = VerpSigner::new(KEY);
    let valid = signer.return_path("autumn-2026", 42, "bounces.acme.example");
    let mut rng = rand::rngs::StdRng::seed_from_u64(2026);
    let mut accepted = 0;
    for i in 0..10_000 {
        let input: Vec<u8> = match i % 3 {
            // Pure random bytes.
            0 => (0..rng.gen_range(0..200)).map(|_| rng.gen()).collect(),
            // Random bytes in the right shape.
            1 => {
                let mut v = b"b-".to_vec();
                v.extend((0..rng.gen_range(0..80)).map(|_| {
                    *b"-@<>ab9z_.\xff\xc3"
                        .get(rng.gen_range(0..14))
                        .unwrap_or(&b'a')
                }));
                v
            }
            // The valid address with random byte flips.
            _ => {
                let mut v = valid.clone().into_bytes();
                for _ in 0..rng.gen_range(1..4) {
                    let pos = rng.gen_range(0..v.len());
                    v[pos] = rng.gen();
                }
                v
            }
        };
        let text = String::from_utf8_lossy(&input);
        if let Ok(token) = signer.verify(&text) {
            // Only a flip that left the local part intact (e.g. in the domain) may pass.
            assert_eq!(token, token_of_valid());
            accepted += 1;
        }
    }
    assert!(accepted < 3400, "{accepted}");
}

fn token_of_valid() -> VerpToken {
    token("autumn-2026", 42)
}
