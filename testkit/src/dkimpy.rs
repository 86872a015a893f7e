//! dkimpy, an independent DKIM verifier, driven through `verify.py` in this crate: the key
//! record comes from a file, from the command line or from a real DNS server.
//!
//! Needs `python3` with `pip install dkimpy pynacl` (dnspython comes with dkimpy): without them
//! [`require`] and [`verifies`] panic, they never skip.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

/// The dkimpy driver script.
pub const VERIFY_PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/verify.py");

/// What to tell whoever lacks the Python side.
pub const PIP_HINT: &str =
    "the DKIM tests need python3 with dkimpy and pynacl: pip install dkimpy pynacl";

/// Checks (once per process) that python3, dkimpy, pynacl and dnspython are there; panics with
/// the fix otherwise.
pub fn require() {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import dkim, nacl.signing, dns.message"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run python3 ({e}); {PIP_HINT}"));
        assert!(
            out.status.success(),
            "dkimpy/pynacl missing ({}); {PIP_HINT}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    });
}

/// Asks dkimpy whether the topmost DKIM-Signature of the message in `message_file` verifies,
/// with the key source given by `key_args` (`--txt-file F [--expect-name N]`, `--txt RECORD`
/// or `--dns HOST:PORT`, see `verify.py`). True on pass, false on fail; panics with dkimpy's
/// output when the verifier could not run at all.
pub fn verifies<S: AsRef<OsStr>>(message_file: &Path, key_args: &[S]) -> bool {
    require();
    let out = Command::new("python3")
        .arg(VERIFY_PY)
        .arg(message_file)
        .args(key_args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}); {PIP_HINT}"));
    match out.status.code() {
        Some(0) => true,
        Some(1) => false,
        _ => panic!(
            "verify.py could not run ({:?}): {}; {PIP_HINT}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}
