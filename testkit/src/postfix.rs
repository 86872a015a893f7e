//! A real, private Postfix instance for tests: `postfix -c DIR start` on a
//! configuration written into a temporary directory, with its own queue,
//! data directory, log file and two smtpd listeners on free loopback ports:
//!
//! - [`Postfix::tls_addr`]: STARTTLS offered (`smtpd_tls_security_level =
//!   may`) with a certificate for `mx.test` signed by a CA generated here
//!   ([`Postfix::ca_pem`]);
//! - [`Postfix::plain_addr`]: the same smtpd with
//!   `-o smtpd_tls_security_level=none` (no STARTTLS).
//!
//! Mail to `rcpt@example.test` is delivered by Postfix's `local(8)` into a
//! maildir inside the directory ([`Postfix::wait_for_messages`]); other
//! recipients in `example.test` are refused with 550. Everything Postfix logs
//! goes to [`Postfix::maillog`].
//!
//! The module also has [`SmtpSink`], Postfix's `smtp-sink` accepting everything.
//!
//! Requires root (Postfix's master runs as root and drops privileges), the
//! Debian package `postfix` (binaries, the `postfix` user, the `postdrop`
//! group) and the `nobody` user: [`Postfix::start`] panics, never skips, when
//! something is missing. Dropping the value stops the instance.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tempfile::TempDir;

use crate::process::Daemon;

use crate::peers::{free_port, is_root, require};

/// The Postfix control command.
pub const POSTFIX: &str = "/usr/sbin/postfix";
/// Postfix's configuration utility.
pub const POSTCONF: &str = "/usr/sbin/postconf";
/// The only mailbox of the instance.
pub const MAILBOX: &str = "rcpt@example.test";
/// Host name of the instance and of its certificate.
pub const HOST_NAME: &str = "mx.test";

/// A running private Postfix instance (see the module docs).
pub struct Postfix {
    dir: TempDir,
    config_dir: PathBuf,
    /// smtpd offering STARTTLS.
    pub tls_addr: SocketAddr,
    /// smtpd without STARTTLS.
    pub plain_addr: SocketAddr,
    /// The CA certificate (PEM file) that signed the server certificate.
    pub ca_pem: PathBuf,
}

/// The main.cf lines every private instance starts with (tests and the bench): its own queue,
/// data folder and log below `@DIR@`, loopback only, no alias database, no biff.
pub const MAIN_CF_BASE: &str = "\
compatibility_level = 3.6
queue_directory = @DIR@/spool
data_directory = @DIR@/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
maillog_file = @DIR@/maillog
maillog_file_prefixes = @DIR@
alias_database =
biff = no
";

/// The master.cf services every private instance runs, after its own smtpd lines.
pub const MASTER_CF_SERVICES: &str = "\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
";

/// This instance's main.cf, after [`MAIN_CF_BASE`].
const MAIN_CF: &str = "\
myhostname = mx.test
mydomain = test
myorigin = mx.test
mydestination = example.test
syslog_name = mailfarm-test
alias_maps = inline:{ {rcpt=@DIR@/maildir/} }
local_recipient_maps = $alias_maps
smtpd_tls_security_level = may
smtpd_tls_chain_files = @DIR@/etc/server.key, @DIR@/etc/server.pem
smtpd_tls_loglevel = 1
smtpd_tls_received_header = yes
recipient_delimiter = +
";

/// This instance's smtpd listeners and the services it needs beyond [`MASTER_CF_SERVICES`].
const MASTER_CF: &str = "\
127.0.0.1:@TLS_PORT@ inet n - n - - smtpd
127.0.0.1:@PLAIN_PORT@ inet n - n - - smtpd
  -o smtpd_tls_security_level=none
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
flush     unix  n       -       n       1000?   0       flush
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
";

impl Postfix {
    /// Writes the configuration, starts Postfix and waits until both smtpd
    /// listeners accept connections.
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// Like [`Postfix::start`], with `extra` lines appended to main.cf (a later setting
    /// overrides an earlier one; `@DIR@` is the instance's folder).
    pub fn start_with(extra: &str) -> Self {
        check_prerequisites();
        // Short path: Postfix's UNIX sockets live under the queue directory.
        let dir = tempfile::Builder::new()
            .prefix("mailfarm-pfx.")
            .tempdir_in("/tmp")
            .expect("creating the Postfix directory");
        let root = dir.path().to_owned();
        // Postfix daemons (user postfix) must reach the queue below it.
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).expect("chmod");
        let config_dir = root.join("etc");
        for sub in ["etc", "spool", "data", "maildir"] {
            fs::create_dir(root.join(sub)).expect("creating a Postfix directory");
        }
        let postfix = (uid("postfix"), gid("postfix"));
        chown(root.join("data"), Some(postfix.0), Some(postfix.1)).expect("chown data");
        // local(8) delivers to an inline alias map as default_privs (nobody).
        chown(root.join("maildir"), Some(uid("nobody")), None).expect("chown maildir");
        fs::set_permissions(root.join("maildir"), fs::Permissions::from_mode(0o700))
            .expect("chmod maildir");

        let ca_pem = write_certificates(&config_dir);
        let tls_port = free_port();
        let plain_port = loop {
            let port = free_port();
            if port != tls_port {
                break port;
            }
        };
        let dir_str = root.to_str().expect("temporary path is not UTF-8");
        fs::write(
            config_dir.join("main.cf"),
            format!("{MAIN_CF_BASE}{MAIN_CF}{extra}\n").replace("@DIR@", dir_str),
        )
        .expect("writing main.cf");
        fs::write(
            config_dir.join("master.cf"),
            format!("{MASTER_CF}{MASTER_CF_SERVICES}")
                .replace("@TLS_PORT@", &tls_port.to_string())
                .replace("@PLAIN_PORT@", &plain_port.to_string()),
        )
        .expect("writing master.cf");

        let instance = Self {
            dir,
            config_dir,
            tls_addr: ([127, 0, 0, 1], tls_port).into(),
            plain_addr: ([127, 0, 0, 1], plain_port).into(),
            ca_pem,
        };
        let out = instance.control("start");
        assert!(
            out.status.success(),
            "`postfix start` failed ({}): {}{}\nmaillog:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            instance.maillog()
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        for addr in [instance.tls_addr, instance.plain_addr] {
            while TcpStream::connect(addr).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "Postfix does not listen on {addr}; maillog:\n{}",
                    instance.maillog()
                );
                sleep(Duration::from_millis(50));
            }
        }
        instance
    }

    /// Everything the instance logged so far.
    pub fn maillog(&self) -> String {
        fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }

    /// Waits (up to 20 s) until the log has a line containing `needle` and
    /// returns that line.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = self.maillog();
            if let Some(line) = log.lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?}; maillog:\n{log}"
            );
            sleep(Duration::from_millis(50));
        }
    }

    /// Waits (up to 20 s) until the maildir holds `count` delivered
    /// messages and returns them, oldest first.
    pub fn wait_for_messages(&self, count: usize) -> Vec<String> {
        let new = self.dir.path().join("maildir/new");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut files: Vec<PathBuf> = fs::read_dir(&new)
                .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            if files.len() >= count {
                // Maildir names start with the delivery time in seconds.
                files.sort();
                return files
                    .iter()
                    .map(|f| fs::read_to_string(f).expect("reading a delivered message"))
                    .collect();
            }
            assert!(
                Instant::now() < deadline,
                "{} of {count} messages delivered; maillog:\n{}",
                files.len(),
                self.maillog()
            );
            sleep(Duration::from_millis(50));
        }
    }

    /// The instance's folder (`etc/`, `spool/`, `maildir/`, `maillog`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Every message delivered to the maildir so far (no waiting), oldest first.
    pub fn delivered(&self) -> Vec<String> {
        let new = self.dir.path().join("maildir/new");
        let mut files: Vec<PathBuf> = fs::read_dir(&new)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .filter_map(|f| fs::read_to_string(f).ok())
            .collect()
    }

    fn control(&self, command: &str) -> std::process::Output {
        Command::new(POSTFIX)
            .arg("-c")
            .arg(&self.config_dir)
            .arg(command)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {POSTFIX}: {e}"))
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = self.control("stop");
        // The master closes its listeners when it exits: wait for that before
        // the directory is removed under it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline
            && (TcpStream::connect(self.tls_addr).is_ok()
                || TcpStream::connect(self.plain_addr).is_ok())
        {
            sleep(Duration::from_millis(50));
        }
    }
}

fn check_prerequisites() {
    for binary in [POSTFIX, POSTCONF] {
        assert!(
            Path::new(binary).exists(),
            "{binary} is missing: install Postfix (`apt-get install postfix`) to run this test"
        );
    }
    let daemons = postconf_default("daemon_directory");
    let smtpd = Path::new(&daemons).join("smtpd");
    assert!(
        smtpd.exists(),
        "{} is missing: install Postfix (`apt-get install postfix`)",
        smtpd.display()
    );
    assert_eq!(
        id(&["-u"]),
        "0",
        "the Postfix tests must run as root (Postfix's master starts as root)"
    );
    let out = Command::new("getent")
        .args(["group", "postdrop"])
        .output()
        .expect("running getent");
    assert!(
        out.status.success(),
        "group postdrop is missing: install Postfix (`apt-get install postfix`)"
    );
}

fn postconf_default(parameter: &str) -> String {
    let out = Command::new(POSTCONF)
        .args(["-dh", parameter])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {POSTCONF}: {e}"));
    assert!(out.status.success(), "postconf -dh {parameter} failed");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn id(args: &[&str]) -> String {
    let out = Command::new("id")
        .args(args)
        .output()
        .expect("running `id`");
    assert!(
        out.status.success(),
        "`id {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn uid(user: &str) -> u32 {
    id(&["-u", user])
        .parse()
        .unwrap_or_else(|_| panic!("no uid for user {user}"))
}

fn gid(user: &str) -> u32 {
    id(&["-g", user])
        .parse()
        .unwrap_or_else(|_| panic!("no gid for user {user}"))
}

/// A test CA and a server certificate for [`HOST_NAME`] it signed, written
/// as `server.key`, `server.pem` (leaf then CA) and `ca.pem`. Returns the
/// path of `ca.pem`.
fn write_certificates(config_dir: &Path) -> PathBuf {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.distinguished_name
        .push(DnType::CommonName, "mailfarm test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().expect("server key");
    let mut leaf = CertificateParams::new(vec![HOST_NAME.to_owned()]).expect("server params");
    leaf.distinguished_name.push(DnType::CommonName, HOST_NAME);
    let leaf = leaf.signed_by(&key, &issuer).expect("server certificate");

    let key_path = config_dir.join("server.key");
    fs::write(&key_path, key.serialize_pem()).expect("writing server.key");
    fs::set_permissions(&key_path, fs::Permissions::from_mode(0o600)).expect("chmod key");
    fs::write(
        config_dir.join("server.pem"),
        format!("{}{}", leaf.pem(), ca_cert.pem()),
    )
    .expect("writing server.pem");
    let ca_path = config_dir.join("ca.pem");
    fs::write(&ca_path, ca_cert.pem()).expect("writing ca.pem");
    ca_path
}

/// Postfix's smtp-sink accepting everything and dumping each transaction into `dir`.
pub struct SmtpSink {
    /// The smtp-sink process.
    pub daemon: Daemon,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where it dumps each transaction.
    pub dir: PathBuf,
}

impl SmtpSink {
    /// Starts smtp-sink on a free loopback port, dumping messages into `dir`.
    pub fn start(dir: &Path) -> Self {
        let binary = require("smtp-sink");
        std::fs::create_dir_all(dir).unwrap();
        let mut command = Command::new(binary);
        if is_root() {
            // smtp-sink drops privileges to -u; that user must be able to write the dumps.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
            command.args(["-u", "nobody"]);
        }
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        command.arg("-d").arg(format!("{}/%M.", dir.display()));
        command.arg(addr.to_string()).arg("256");
        let daemon = Daemon::spawn("smtp-sink", command);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "smtp-sink did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            daemon,
            addr,
            dir: dir.to_owned(),
        }
    }

    /// The dumped transactions: (envelope recipient, raw dump). Every dump must be complete:
    /// call it once the sender is done.
    pub fn messages(&self) -> Vec<(String, Vec<u8>)> {
        self.dumps(false)
    }

    /// The dumps complete so far, while a sender may still be writing: a dump smtp-sink has
    /// not finished (no envelope line yet) is left out instead of failing.
    pub fn messages_so_far(&self) -> Vec<(String, Vec<u8>)> {
        self.dumps(true)
    }

    fn dumps(&self, skip_partial: bool) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).unwrap() {
            let path = entry.unwrap().path();
            let raw = std::fs::read(&path).unwrap();
            let text = String::from_utf8_lossy(&raw);
            let rcpt = text
                .lines()
                .find_map(|l| l.strip_prefix("X-Rcpt-Args: <"))
                .and_then(|l| l.split('>').next());
            match rcpt {
                Some(rcpt) => out.push((rcpt.to_owned(), raw.clone())),
                None if skip_partial => {}
                None => panic!("no X-Rcpt-Args in {}", path.display()),
            }
        }
        out
    }
}
