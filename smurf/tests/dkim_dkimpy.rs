//! DKIM signatures made by `mailfarm_smurf::outbound::dkim` checked by an independent
//! verifier: dkimpy, driven through `mailfarm_testkit::dkimpy`, with the public key record handed
//! over from a file (no DNS). Every positive check has a negative twin (the message altered
//! after signing must FAIL), so a verifier that accepts anything would not pass.
//!
//! Needs `python3` with `pip install dkimpy pynacl` and the `openssl` CLI; without them these
//! tests panic (they never skip).
//!
//! The signing cost benchmark is ignored by default:
//! `cargo test --release -p mailfarm-smurf --test dkim_dkimpy -- --ignored --nocapture`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use mailfarm_smurf::outbound::dkim::{DkimAlgorithm, DkimError, DkimKeyConfig, DkimSigner};
use mailfarm_testkit::dkimpy;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

/// Generated key files and their DNS TXT record contents, made once per test run.
struct Keys {
    /// RSA 2048, PKCS#8 PEM.
    rsa_pkcs8: PathBuf,
    /// The same RSA key, PKCS#1 PEM (`RSA PRIVATE KEY`).
    rsa_pkcs1: PathBuf,
    /// TXT record of the RSA key.
    rsa_txt: String,
    /// RSA 1024, PKCS#8 PEM: too small, must be refused.
    rsa_1024: PathBuf,
    /// Ed25519 from ring (PKCS#8 v2, with the public key).
    ed_ring: PathBuf,
    /// TXT record of `ed_ring`.
    ed_ring_txt: String,
    /// Ed25519 from `openssl genpkey` (PKCS#8 v1, no public key).
    ed_openssl: PathBuf,
    /// TXT record of `ed_openssl`.
    ed_openssl_txt: String,
    /// The directory holding everything.
    dir: PathBuf,
}

/// Runs openssl with `args`, panicking with its stderr on failure; returns stdout.
fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the openssl CLI ({e}); install openssl"));
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Standard base64 with padding.
fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// The shared keys (generated on first use under the target's test temp dir).
fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dkim-keys");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create key dir");
        let p = |name: &str| dir.join(name);
        let s = |path: &Path| path.to_str().expect("utf-8 path").to_string();

        let rsa_pkcs8 = p("rsa2048.pem");
        let rsa_pkcs1 = p("rsa2048-pkcs1.pem");
        let rsa_1024 = p("rsa1024.pem");
        openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            &s(&rsa_pkcs8),
        ]);
        openssl(&[
            "pkey",
            "-in",
            &s(&rsa_pkcs8),
            "-traditional",
            "-out",
            &s(&rsa_pkcs1),
        ]);
        openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:1024",
            "-out",
            &s(&rsa_1024),
        ]);
        let rsa_spki = openssl(&["pkey", "-in", &s(&rsa_pkcs8), "-pubout", "-outform", "DER"]);
        let rsa_txt = format!("v=DKIM1; k=rsa; p={}", base64(&rsa_spki));
        let pkcs1 = std::fs::read_to_string(&rsa_pkcs1).expect("read pkcs1");
        assert!(
            pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"),
            "{pkcs1}"
        );

        let rng = SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).expect("ed25519 keygen");
        let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).expect("ed25519 parse");
        let b64 = base64(doc.as_ref());
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).expect("ascii"));
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        let ed_ring = p("ed25519-ring.pem");
        std::fs::write(&ed_ring, pem).expect("write ed25519 key");
        let ed_ring_txt = format!(
            "v=DKIM1; k=ed25519; p={}",
            base64(pair.public_key().as_ref())
        );

        let ed_openssl = p("ed25519-openssl.pem");
        openssl(&["genpkey", "-algorithm", "ED25519", "-out", &s(&ed_openssl)]);
        let spki = openssl(&["pkey", "-in", &s(&ed_openssl), "-pubout", "-outform", "DER"]);
        assert_eq!(
            spki.len(),
            44,
            "Ed25519 SPKI is 12 bytes of prefix + 32 of key"
        );
        let ed_openssl_txt = format!("v=DKIM1; k=ed25519; p={}", base64(&spki[12..]));

        Keys {
            rsa_pkcs8,
            rsa_pkcs1,
            rsa_txt,
            rsa_1024,
            ed_ring,
            ed_ring_txt,
            ed_openssl,
            ed_openssl_txt,
            dir,
        }
    })
}

/// One key's configuration with the default header list.
fn config(domain: &str, selector: &str, algorithm: DkimAlgorithm, key: &Path) -> DkimKeyConfig {
    DkimKeyConfig {
        domain: domain.to_string(),
        selector: selector.to_string(),
        algorithm,
        private_key: key.to_path_buf(),
        headers: None,
    }
}

/// A signer holding exactly one key.
fn signer(domain: &str, selector: &str, algorithm: DkimAlgorithm, key: &Path) -> DkimSigner {
    DkimSigner::load(&[config(domain, selector, algorithm, key)]).expect("load key")
}

/// Asks dkimpy whether `message` verifies with the key record `txt`, served only under
/// `SELECTOR._domainkey.DOMAIN`. True on pass, false on fail; panics if the verifier could not
/// run at all.
fn dkimpy_verifies(message: &[u8], txt: &str, selector: &str, domain: &str) -> bool {
    let dir = tempfile::tempdir().expect("tempdir");
    let msg_path = dir.path().join("message.eml");
    let txt_path = dir.path().join("record.txt");
    std::fs::write(&msg_path, message).expect("write message");
    std::fs::write(&txt_path, txt).expect("write record");
    dkimpy::verifies(
        &msg_path,
        &[
            OsStr::new("--txt-file"),
            txt_path.as_os_str(),
            OsStr::new("--expect-name"),
            OsStr::new(&format!("{selector}._domainkey.{domain}")),
        ],
    )
}

/// Like [`dkimpy_verifies`] but panics with the message if it does not verify.
fn assert_verifies(message: &[u8], txt: &str, selector: &str, domain: &str) {
    assert!(
        dkimpy_verifies(message, txt, selector, domain),
        "dkimpy rejected a message we signed:\n{}",
        String::from_utf8_lossy(message)
    );
}

/// Panics if dkimpy accepts `message` (an altered one).
fn assert_fails(message: &[u8], txt: &str, selector: &str, domain: &str, what: &str) {
    assert!(
        !dkimpy_verifies(message, txt, selector, domain),
        "dkimpy accepted the message after {what}"
    );
}

/// Replaces the first occurrence of `from` (which must exist) in `message`.
fn replace_once(message: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = message
        .windows(from.len())
        .position(|w| w == from)
        .unwrap_or_else(|| panic!("{:?} not in message", String::from_utf8_lossy(from)));
    [&message[..at], to, &message[at + from.len()..]].concat()
}

/// The `DKIM-Signature` field (unfolded) prepended to `signed`, and the rest.
fn split_signature(signed: &[u8]) -> (String, &[u8]) {
    assert!(
        signed.starts_with(b"DKIM-Signature: "),
        "signature not first"
    );
    let mut end = 0;
    while let Some(nl) = signed[end..].iter().position(|&b| b == b'\n') {
        end += nl + 1;
        if !matches!(signed.get(end), Some(b' ' | b'\t')) {
            break;
        }
    }
    let field = String::from_utf8(signed[..end].to_vec()).expect("ascii signature");
    (field.replace("\r\n", ""), &signed[end..])
}

/// The value of tag `name` in an unfolded `DKIM-Signature` field, whitespace removed.
fn tag(field: &str, name: &str) -> String {
    let value = field.trim_start_matches("DKIM-Signature:");
    value
        .split(';')
        .map(|t| t.split_whitespace().collect::<String>())
        .find_map(|t| t.strip_prefix(&format!("{name}=")).map(str::to_string))
        .unwrap_or_else(|| panic!("no {name}= in {field}"))
}

/// A realistic bulk message: multipart/alternative, RFC 2047 subject and display names, folded
/// and whitespace-padded headers, a 900-character line, trailing whitespace and trailing empty
/// lines in the body, base64 HTML part. CRLF throughout.
fn campaign_message(from_domain: &str) -> Vec<u8> {
    let long_line = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. ".repeat(16);
    let html_b64 = base64(
        "<html><body><p>Bonjour Jürgen, voici nos offres d'été — 20 % !</p></body></html>"
            .repeat(6)
            .as_bytes(),
    );
    let mut html_lines = String::new();
    for line in html_b64.as_bytes().chunks(76) {
        html_lines.push_str(std::str::from_utf8(line).expect("ascii"));
        html_lines.push_str("\r\n");
    }
    format!(
        "Return-Path: <bounce+1234@{from_domain}>\r\n\
         From: =?UTF-8?Q?L=C3=A9a_de_l=27=C3=A9quipe?= <news@{from_domain}>\r\n\
         To: =?UTF-8?B?SsO8cmdlbiBNw7xsbGVy?= <jurgen.muller@dest.test>\r\n\
         Subject: =?UTF-8?B?Tm9zIG9mZnJlcyBk4oCZw6l0w6kg4oCUIDIwICUgIQ==?=\r\n\
         \t=?UTF-8?Q?_sur_tout_le_catalogue?=   \r\n\
         Date: Tue, 03 Jun 2025 09:15:00 +0200\r\n\
         Message-ID: <20250603091500.1234.abcdef@{from_domain}>\r\n\
         MIME-Version: 1.0\r\n\
         Reply-To:   \"Support  Team\"   <support@{from_domain}>  \r\n\
         List-Id: Offres <offres.{from_domain}>\r\n\
         List-Unsubscribe: <https://{from_domain}/u/1234?t=abcdef>,\r\n \
         <mailto:unsubscribe+1234@{from_domain}>\r\n\
         List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\
         X-Mailer: mailfarm\r\n\
         Content-Type: multipart/alternative;\r\n\tboundary=\"=_b0und4ry_42\"\r\n\
         \r\n\
         This is a multi-part message in MIME format.\r\n\
         \r\n\
         --=_b0und4ry_42\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\
         \r\n\
         Bonjour Jürgen,   \r\n\
         \tvoici  nos   offres\t\t d'été.\r\n\
         {long_line}\r\n\
         \r\n\
         -- \r\n\
         L'équipe\r\n\
         \r\n\
         --=_b0und4ry_42\r\n\
         Content-Type: text/html; charset=utf-8\r\n\
         Content-Transfer-Encoding: base64\r\n\
         \r\n\
         {html_lines}\
         --=_b0und4ry_42--\r\n\
         \r\n\
         \r\n"
    )
    .into_bytes()
}

#[test]
fn rsa_pkcs8_multipart_message_verifies_and_tampering_fails() {
    let keys = keys();
    let domain = "example.com";
    let s = signer(domain, "mf2025", DkimAlgorithm::RsaSha256, &keys.rsa_pkcs8);
    let message = campaign_message(domain);
    let signed = s
        .sign(&message)
        .expect("sign")
        .expect("key for example.com");
    let txt = &keys.rsa_txt;
    assert_verifies(&signed, txt, "mf2025", domain);

    // Relaxed/relaxed really is relaxed: whitespace changes and re-folding survive.
    let refolded = replace_once(&signed, b"List-Id: Offres <", b"List-Id:   Offres\r\n\t  <");
    let refolded = replace_once(
        &refolded,
        b"Bonjour J\xc3\xbcrgen,",
        b"Bonjour J\xc3\xbcrgen,\t ",
    );
    let refolded = [&refolded[..], b"\r\n\r\n"].concat(); // more trailing empty lines
    assert_verifies(&refolded, txt, "mf2025", domain);

    // Anything else must break it.
    let body = replace_once(&signed, b"offres\t\t d'", b"offres\t\t D'");
    assert_fails(&body, txt, "mf2025", domain, "changing one body byte");
    let html = replace_once(&signed, b"--=_b0und4ry_42--", b"--=_b0und4ry_43--");
    assert_fails(
        &html,
        txt,
        "mf2025",
        domain,
        "changing the closing boundary",
    );
    let subject = replace_once(
        &signed,
        b"_sur_tout_le_catalogue",
        b"_sur_tout_le_catalogu3",
    );
    assert_fails(&subject, txt, "mf2025", domain, "changing the Subject");
    let unsub = replace_once(&signed, b"/u/1234?", b"/u/1235?");
    assert_fails(&unsub, txt, "mf2025", domain, "changing List-Unsubscribe");
    let reply_to = replace_once(&signed, b"<support@", b"<attacker@");
    assert_fails(&reply_to, txt, "mf2025", domain, "changing Reply-To");
    // dkimpy must be using the record we gave it: another key's record fails.
    assert_fails(
        &signed,
        &keys.ed_ring_txt,
        "mf2025",
        domain,
        "swapping the key record",
    );
}

#[test]
fn signature_field_tags_and_untouched_message() {
    let keys = keys();
    let s = signer(
        "Example.COM.",
        "mf2025",
        DkimAlgorithm::RsaSha256,
        &keys.rsa_pkcs8,
    );
    let message = campaign_message("example.com");
    let signed = s
        .sign_at(&message, 1_750_000_000)
        .expect("sign")
        .expect("signed");
    let (field, rest) = split_signature(&signed);
    assert_eq!(rest, &message[..], "the message itself must be unchanged");
    assert_eq!(tag(&field, "v"), "1");
    assert_eq!(tag(&field, "a"), "rsa-sha256");
    assert_eq!(tag(&field, "d"), "example.com");
    assert_eq!(tag(&field, "s"), "mf2025");
    assert_eq!(tag(&field, "c"), "relaxed/relaxed");
    assert_eq!(tag(&field, "t"), "1750000000");
    assert_eq!(
        tag(&field, "b").len(),
        344,
        "RSA-2048 signature is 256 bytes"
    );
    assert_eq!(tag(&field, "bh").len(), 44, "SHA-256 body hash");
    let h: Vec<String> = tag(&field, "h")
        .split(':')
        .map(str::to_ascii_lowercase)
        .collect();
    for want in [
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "reply-to",
        "list-id",
        "list-unsubscribe",
        "list-unsubscribe-post",
    ] {
        assert!(h.contains(&want.to_string()), "{want} not signed: {h:?}");
    }
    for unsigned in ["x-mailer", "return-path", "cc", "sender"] {
        assert!(
            !h.contains(&unsigned.to_string()),
            "{unsigned} signed: {h:?}"
        );
    }
    assert_eq!(
        h.iter().filter(|n| *n == "from").count(),
        2,
        "From over-signed once"
    );
    let header_len = signed.len() - message.len();
    let header = String::from_utf8_lossy(&signed[..header_len]);
    println!("{header}");
    assert!(
        header.split("\r\n").all(|line| line.len() <= 78),
        "DKIM-Signature lines stay within 78 characters:\n{header}"
    );
    assert_verifies(&signed, &keys.rsa_txt, "mf2025", "example.com");
}

#[test]
fn rsa_pkcs1_key_verifies() {
    let keys = keys();
    let s = signer(
        "pkcs1.test",
        "old",
        DkimAlgorithm::RsaSha256,
        &keys.rsa_pkcs1,
    );
    let message = campaign_message("pkcs1.test");
    let signed = s.sign(&message).expect("sign").expect("signed");
    assert_verifies(&signed, &keys.rsa_txt, "old", "pkcs1.test");
    let changed = replace_once(&signed, b"Date: Tue, 03", b"Date: Tue, 04");
    assert_fails(
        &changed,
        &keys.rsa_txt,
        "old",
        "pkcs1.test",
        "changing Date",
    );
}

#[test]
fn ed25519_ring_key_verifies_and_tampering_fails() {
    let keys = keys();
    let s = signer(
        "ed.example.org",
        "ed1",
        DkimAlgorithm::Ed25519Sha256,
        &keys.ed_ring,
    );
    let message = campaign_message("ed.example.org");
    let signed = s.sign(&message).expect("sign").expect("signed");
    let (field, _) = split_signature(&signed);
    assert_eq!(tag(&field, "a"), "ed25519-sha256");
    assert_eq!(tag(&field, "b").len(), 88, "Ed25519 signature is 64 bytes");
    let txt = &keys.ed_ring_txt;
    assert_verifies(&signed, txt, "ed1", "ed.example.org");
    let body = replace_once(&signed, b"L'\xc3\xa9quipe", b"L'\xc3\xa9quip\xc3\xa9");
    assert_fails(&body, txt, "ed1", "ed.example.org", "changing a body byte");
    let to = replace_once(&signed, b"jurgen.muller@", b"jurgen.mueller@");
    assert_fails(&to, txt, "ed1", "ed.example.org", "changing To");
    assert_fails(
        &signed,
        &keys.ed_openssl_txt,
        "ed1",
        "ed.example.org",
        "swapping the key record",
    );
}

#[test]
fn ed25519_openssl_pkcs8_v1_key_verifies() {
    let keys = keys();
    let s = signer(
        "example.net",
        "ed2",
        DkimAlgorithm::Ed25519Sha256,
        &keys.ed_openssl,
    );
    let message = campaign_message("example.net");
    let signed = s.sign(&message).expect("sign").expect("signed");
    assert_verifies(&signed, &keys.ed_openssl_txt, "ed2", "example.net");
}

#[test]
fn empty_body_and_header_only_messages_verify() {
    let keys = keys();
    let cases = [
        (DkimAlgorithm::RsaSha256, &keys.rsa_pkcs8, &keys.rsa_txt),
        (
            DkimAlgorithm::Ed25519Sha256,
            &keys.ed_ring,
            &keys.ed_ring_txt,
        ),
    ];
    for (algorithm, key, txt) in cases {
        let s = signer("empty.test", "e", algorithm, key);
        let headers = "From: a@empty.test\r\nTo: b@dest.test\r\nSubject: nothing\r\n";
        for message in [
            format!("{headers}\r\n"),         // empty body
            headers.to_string(),              // no body separator at all
            format!("{headers}\r\n\r\n\r\n"), // body of empty lines only (same canonical body)
        ] {
            let signed = s.sign(message.as_bytes()).expect("sign").expect("signed");
            assert_verifies(&signed, txt, "e", "empty.test");
        }
        let signed = s
            .sign(format!("{headers}\r\n").as_bytes())
            .expect("sign")
            .expect("signed");
        let with_body = [&signed[..], b"x\r\n"].concat();
        assert_fails(
            &with_body,
            txt,
            "e",
            "empty.test",
            "adding a body to an empty one",
        );
    }
}

#[test]
fn headers_added_after_signing_break_it_only_where_they_should() {
    let keys = keys();
    let s = signer(
        "example.com",
        "mf",
        DkimAlgorithm::Ed25519Sha256,
        &keys.ed_ring,
    );
    let txt = &keys.ed_ring_txt;
    let signed = s
        .sign(&campaign_message("example.com"))
        .expect("sign")
        .expect("signed");
    let (sig, rest) = split_signature(&signed);
    let sig = format!("{sig}\r\n");
    // A second From (the classic DKIM replay trick) is caught by the over-signed From.
    let spoofed = [sig.as_bytes(), b"From: ceo@example.com\r\n", rest].concat();
    assert_fails(&spoofed, txt, "mf", "example.com", "adding a second From");
    // Trace fields added in transit do not matter.
    let relayed = [
        b"Received: from mx.relay.test by mx.dest.test; Tue, 3 Jun 2025 09:16:00 +0200\r\n",
        &signed[..],
    ]
    .concat();
    assert_verifies(&relayed, txt, "mf", "example.com");
    // Neither does a header we do not sign, added anywhere.
    let tagged = replace_once(
        &signed,
        b"X-Mailer: mailfarm\r\n",
        b"X-Mailer: mailfarm\r\nX-Spam: no\r\n",
    );
    assert_verifies(&tagged, txt, "mf", "example.com");
}

#[test]
fn custom_header_list_is_honoured() {
    let keys = keys();
    let mut c = config(
        "example.com",
        "few",
        DkimAlgorithm::RsaSha256,
        &keys.rsa_pkcs8,
    );
    c.headers = Some(vec!["from".into(), "Subject".into(), "X-Mailer".into()]);
    let s = DkimSigner::load(&[c]).expect("load");
    let signed = s
        .sign(&campaign_message("example.com"))
        .expect("sign")
        .expect("signed");
    let (field, _) = split_signature(&signed);
    assert_eq!(tag(&field, "h"), "X-Mailer:Subject:from:From");
    let txt = &keys.rsa_txt;
    assert_verifies(&signed, txt, "few", "example.com");
    let to = replace_once(&signed, b"jurgen.muller@", b"jurgen.mueller@");
    assert_verifies(&to, txt, "few", "example.com"); // To is not signed here
    let mailer = replace_once(&signed, b"X-Mailer: mailfarm", b"X-Mailer: mailfarn");
    assert_fails(&mailer, txt, "few", "example.com", "changing X-Mailer");
}

#[test]
fn signing_domain_is_chosen_from_the_from_header() {
    let keys = keys();
    let s = DkimSigner::load(&[
        config("alpha.test", "a", DkimAlgorithm::RsaSha256, &keys.rsa_pkcs8),
        config(
            "beta.test",
            "b",
            DkimAlgorithm::Ed25519Sha256,
            &keys.ed_ring,
        ),
    ])
    .expect("load");
    assert!(!s.is_empty());
    // Different domains pick different keys.
    let a = s
        .sign(b"From: x@ALPHA.test\r\nSubject: a\r\n\r\nhi\r\n")
        .expect("sign")
        .expect("alpha signed");
    assert_verifies(&a, &keys.rsa_txt, "a", "alpha.test");
    let b = s
        .sign(b"Subject: b\r\nFrom: \"x@alpha.test\" (not <y@alpha.test>)\r\n <x@beta.test>\r\n\r\nhi\r\n")
        .expect("sign")
        .expect("beta signed");
    assert_verifies(&b, &keys.ed_ring_txt, "b", "beta.test");
    // No key: returned unchanged as None; subdomains are not covered by the parent's key.
    for from in ["x@gamma.test", "x@news.alpha.test", "x@alpha.test.evil"] {
        let msg = format!("From: {from}\r\n\r\nhi\r\n");
        assert!(
            s.sign(msg.as_bytes()).expect("sign").is_none(),
            "{from} signed"
        );
    }
    // Malformed messages are errors, not silently unsigned.
    assert!(matches!(
        s.sign(b"Subject: x\r\n\r\nhi\r\n"),
        Err(DkimError::MissingFrom)
    ));
    assert!(matches!(
        s.sign(b"From: a@alpha.test\r\nFrom: b@alpha.test\r\n\r\n"),
        Err(DkimError::MultipleFrom(2))
    ));
    assert!(matches!(
        s.sign(b"From: undisclosed-recipients:;\r\n\r\n"),
        Err(DkimError::FromWithoutDomain(_))
    ));
    assert!(matches!(
        s.sign(b"From: a@alpha.test\r\nthis is not a header\r\n\r\n"),
        Err(DkimError::MalformedHeader(_))
    ));
}

#[test]
fn long_domains_and_selectors_fold_correctly() {
    let keys = keys();
    for (domain, selector) in [
        ("a.io", "s"),
        (
            "mail.marketing.some-very-long-company-name-for-testing.example",
            "selector-2025-06-rotation-b",
        ),
        ("x.example", "k7"),
    ] {
        for (algorithm, key, txt) in [
            (DkimAlgorithm::RsaSha256, &keys.rsa_pkcs8, &keys.rsa_txt),
            (
                DkimAlgorithm::Ed25519Sha256,
                &keys.ed_ring,
                &keys.ed_ring_txt,
            ),
        ] {
            let s = signer(domain, selector, algorithm, key);
            let signed = s
                .sign(&campaign_message(domain))
                .expect("sign")
                .expect("signed");
            assert_verifies(&signed, txt, selector, domain);
        }
    }
}

#[test]
fn load_reports_every_bad_key_at_once() {
    let keys = keys();
    let garbage = keys.dir.join("garbage.pem");
    std::fs::write(&garbage, "not a key\n").expect("write");
    let mut no_from = config(
        "nofrom.test",
        "s",
        DkimAlgorithm::RsaSha256,
        &keys.rsa_pkcs8,
    );
    no_from.headers = Some(vec!["Subject".into(), "To".into()]);
    let configs = [
        config("ok.test", "s", DkimAlgorithm::RsaSha256, &keys.rsa_pkcs8),
        config(
            "missing.test",
            "s",
            DkimAlgorithm::RsaSha256,
            &keys.dir.join("nope.pem"),
        ),
        config("garbage.test", "s", DkimAlgorithm::Ed25519Sha256, &garbage),
        config("small.test", "s", DkimAlgorithm::RsaSha256, &keys.rsa_1024),
        config("mixed.test", "s", DkimAlgorithm::RsaSha256, &keys.ed_ring),
        config(
            "pkcs1ed.test",
            "s",
            DkimAlgorithm::Ed25519Sha256,
            &keys.rsa_pkcs1,
        ),
        config("OK.test", "t", DkimAlgorithm::Ed25519Sha256, &keys.ed_ring),
        config(
            "bad domain.test",
            "s s",
            DkimAlgorithm::Ed25519Sha256,
            &keys.ed_ring,
        ),
        no_from,
    ];
    let err = DkimSigner::load(&configs).expect_err("bad keys must be refused");
    let DkimError::Keys(problems) = &err else {
        panic!("unexpected error {err}");
    };
    let text = err.to_string();
    for domain in [
        "missing.test",
        "garbage.test",
        "small.test",
        "mixed.test",
        "pkcs1ed.test",
        "OK.test",
        "bad domain.test",
        "nofrom.test",
    ] {
        assert!(
            problems.iter().any(|p| p.domain == domain),
            "no problem reported for {domain}: {text}"
        );
    }
    assert!(!problems.iter().any(|p| p.domain == "ok.test"), "{text}");
    assert!(text.contains("already configured"), "{text}");
    assert!(text.contains("must include From"), "{text}");
    assert!(text.contains("nope.pem"), "{text}");
    assert!(text.contains("selector is not"), "{text}");
    // And the good ones alone load.
    DkimSigner::load(&configs[..1]).expect("good key loads");
    assert!(DkimSigner::load(&[]).expect("no keys").is_empty());
}

#[test]
fn key_config_deserialises_from_toml() {
    #[derive(serde::Deserialize)]
    struct File {
        dkim: Vec<DkimKeyConfig>,
    }
    let file: File = toml::from_str(
        r#"
        [[dkim]]
        domain = "example.com"
        selector = "mf2025"
        algorithm = "rsa-sha256"
        private_key = "/etc/mailfarm/dkim/example.com.pem"

        [[dkim]]
        domain = "example.org"
        selector = "ed1"
        algorithm = "ed25519-sha256"
        private_key = "ed.pem"
        headers = ["From", "To", "Subject"]
        "#,
    )
    .expect("parse");
    assert_eq!(file.dkim[0].algorithm, DkimAlgorithm::RsaSha256);
    assert_eq!(file.dkim[0].headers, None);
    assert_eq!(file.dkim[1].algorithm, DkimAlgorithm::Ed25519Sha256);
    assert_eq!(file.dkim[1].headers.as_ref().map(Vec::len), Some(3));
    for bad in [
        "domain = \"a\"\nselector = \"s\"\nalgorithm = \"rsa-sha1\"\nprivate_key = \"k\"",
        "domain = \"a\"\nselector = \"s\"\nalgorithm = \"rsa-sha256\"\nprivate_key = \"k\"\nkey = \"x\"",
    ] {
        assert!(toml::from_str::<DkimKeyConfig>(bad).is_err(), "accepted {bad}");
    }
}

#[test]
fn signer_is_shareable_across_tasks() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<DkimSigner>();
    let keys = keys();
    let s = signer(
        "example.com",
        "mf",
        DkimAlgorithm::RsaSha256,
        &keys.rsa_pkcs8,
    );
    let debug = format!("{s:?}");
    assert!(
        debug.contains("example.com") && !debug.contains("PRIVATE"),
        "{debug}"
    );
}

/// Signing cost per 40 KB message. Run in release:
/// `cargo test --release -p mailfarm-smurf --test dkim_dkimpy -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark"]
fn bench_sign_40kb_messages() {
    let keys = keys();
    let mut message = campaign_message("example.com");
    let filler = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n";
    message.truncate(message.len() - 4);
    while message.len() < 40 * 1024 {
        message.extend_from_slice(filler.as_bytes());
    }
    message.extend_from_slice(b"\r\n");
    const N: u32 = 1000;
    for (name, algorithm, key, txt) in [
        (
            "rsa-2048",
            DkimAlgorithm::RsaSha256,
            &keys.rsa_pkcs8,
            &keys.rsa_txt,
        ),
        (
            "ed25519",
            DkimAlgorithm::Ed25519Sha256,
            &keys.ed_ring,
            &keys.ed_ring_txt,
        ),
    ] {
        let s = signer("example.com", "b", algorithm, key);
        let signed = s.sign(&message).expect("sign").expect("signed");
        assert_verifies(&signed, txt, "b", "example.com");
        let start = Instant::now();
        let mut bytes = 0;
        for _ in 0..N {
            bytes += s.sign(&message).expect("sign").expect("signed").len();
        }
        let per = start.elapsed() / N;
        println!(
            "{name}: {:.1} µs per {} KB message ({} bytes out)",
            per.as_secs_f64() * 1e6,
            message.len() / 1024,
            bytes / N as usize
        );
    }
}
