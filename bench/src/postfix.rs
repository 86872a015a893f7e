//! A private Postfix instance for benchmarks: `postfix -c DIR start` on a main.cf and master.cf
//! written into a fresh folder under /tmp (its own queue, data folder, log and smtpd port; no
//! system configuration touched), stopped when dropped. `inbound` holds what its smtpd takes;
//! `compare` relays it to the sink. Needs root (the master drops privileges) and the `postfix`
//! user. The configuration base is the test kit's (one owner); the tests' launcher there panics
//! instead of reporting errors, so the bench keeps this one.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mailfarm_testkit::postfix::{MAIN_CF_BASE, MASTER_CF_SERVICES};

/// The bench's main.cf lines after the test kit's shared base (`@DIR@`: the instance's folder);
/// a caller's lines follow and may override these.
const BENCH_MAIN_CF: &str = "\
mydestination =
syslog_name = mailfarm-bench
alias_maps =
smtpd_tls_security_level = none
default_process_limit = 400
smtpd_client_connection_count_limit = 0
smtpd_client_message_rate_limit = 0
";

/// master.cf: one smtpd on `@PORT@` and the SMTP client, before the test kit's shared services.
const BENCH_MASTER_CF: &str = "\
127.0.0.1:@PORT@ inet n - n - - smtpd
flush     unix  n       -       n       1000?   0       flush
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
";

/// A running private Postfix instance.
pub struct PrivatePostfix {
    postfix: PathBuf,
    root: tempfile::TempDir,
    /// Its smtpd (the `@PORT@` of master.cf).
    pub addr: SocketAddr,
}

impl PrivatePostfix {
    /// Writes main.cf (the shared base, then `main_cf`; `@DIR@`: the instance's folder) and
    /// master.cf (smtpd on a free loopback port), starts `postfix` and waits until the smtpd
    /// listens.
    pub fn start(postfix: &Path, main_cf: &str) -> anyhow::Result<Self> {
        // Short path: Postfix's UNIX sockets live under the queue directory.
        let root = tempfile::Builder::new()
            .prefix("mailfarm-pfx.")
            .tempdir_in("/tmp")
            .context("creating the Postfix folder")?;
        let dir = root.path();
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
        for sub in ["etc", "spool", "data"] {
            fs::create_dir(dir.join(sub))?;
        }
        let status = Command::new("chown")
            .arg("postfix:postfix")
            .arg(dir.join("data"))
            .status()
            .context("running chown")?;
        if !status.success() {
            bail!("chown postfix: {status} (the Postfix side needs root and the postfix user)");
        }
        let port = crate::procs::free_loopback_port()?;
        let text = dir.to_str().context("non-UTF-8 temporary path")?;
        fs::write(
            dir.join("etc/main.cf"),
            format!("{MAIN_CF_BASE}{BENCH_MAIN_CF}{main_cf}").replace("@DIR@", text),
        )?;
        fs::write(
            dir.join("etc/master.cf"),
            format!("{BENCH_MASTER_CF}{MASTER_CF_SERVICES}").replace("@PORT@", &port.to_string()),
        )?;
        let instance = Self {
            postfix: postfix.to_owned(),
            root,
            addr: ([127, 0, 0, 1], port).into(),
        };
        let out = instance.control("start")?;
        if !out.status.success() {
            bail!(
                "postfix start: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(instance.addr).is_err() {
            if Instant::now() > deadline {
                bail!("Postfix does not listen on {}", instance.addr);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(instance)
    }

    fn control(&self, cmd: &str) -> anyhow::Result<std::process::Output> {
        Command::new(&self.postfix)
            .arg("-c")
            .arg(self.root.path().join("etc"))
            .arg(cmd)
            .output()
            .with_context(|| format!("postfix {cmd}"))
    }

    /// The instance's folder (`spool/`, `maillog` ...).
    pub fn dir(&self) -> &Path {
        self.root.path()
    }

    /// The master's pid: every Postfix process of the instance descends from it.
    pub fn master_pid(&self) -> anyhow::Result<u32> {
        let path = self.dir().join("spool/pid/master.pid");
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        text.trim().parse().context("master.pid")
    }

    /// Queue files in the named queues (`hold`, `active` ...), subfolders included.
    pub fn queue_files(&self, queues: &[&str]) -> u64 {
        queues
            .iter()
            .map(|q| count_files(&self.dir().join("spool").join(q)))
            .sum()
    }
}

impl Drop for PrivatePostfix {
    fn drop(&mut self) {
        let _ = self.control("stop");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Files under `dir`, recursively (Postfix hashes queue files into subfolders).
fn count_files(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => count_files(&e.path()),
            Ok(_) => 1,
            Err(_) => 0,
        })
        .sum()
}
