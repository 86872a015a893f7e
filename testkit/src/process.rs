//! A child process whose output lines are collected in the background, so a test can wait
//! on what a real peer or a real `mailfarm` binary printed, and stop it with SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A child process whose output lines are collected in the background.
pub struct Daemon {
    /// Name used in panics and echoed output.
    pub name: String,
    /// The process.
    pub child: Child,
    /// Lines it printed on stdout so far.
    pub stdout: Arc<Mutex<Vec<String>>>,
    /// Lines it printed on stderr so far.
    pub stderr: Arc<Mutex<Vec<String>>>,
}

fn collect(
    stream: impl std::io::Read + Send + 'static,
    name: String,
    sink: Arc<Mutex<Vec<String>>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if std::env::var_os("MAILFARM_TEST_ECHO").is_some() {
                eprintln!("[{name}] {line}");
            }
            sink.lock().unwrap().push(line);
        }
    });
}

impl Daemon {
    /// Starts `command`, collecting its output.
    pub fn spawn(name: &str, mut command: Command) -> Self {
        command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        collect(
            child.stdout.take().unwrap(),
            name.to_owned(),
            stdout.clone(),
        );
        collect(
            child.stderr.take().unwrap(),
            name.to_owned(),
            stderr.clone(),
        );
        Self {
            name: name.to_owned(),
            child,
            stdout,
            stderr,
        }
    }

    /// Waits until some output line satisfies `pred`, returning it.
    pub fn wait_line(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            for stream in [&self.stdout, &self.stderr] {
                if let Some(line) = stream.lock().unwrap().iter().find(|l| pred(l)) {
                    return line.clone();
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) while waiting for {what}:\n{}",
                    self.name,
                    self.output()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "{} did not print {what} within {timeout:?}:\n{}",
                    self.name,
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Counts output lines satisfying `pred`.
    pub fn count_lines(&self, pred: impl Fn(&str) -> bool) -> usize {
        [&self.stdout, &self.stderr]
            .iter()
            .map(|s| s.lock().unwrap().iter().filter(|l| pred(l)).count())
            .sum()
    }

    /// Everything it printed so far.
    pub fn output(&self) -> String {
        let out = self.stdout.lock().unwrap().join("\n");
        let err = self.stderr.lock().unwrap().join("\n");
        format!("--- stdout ---\n{out}\n--- stderr ---\n{err}")
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "{} ignored SIGTERM for {timeout:?}:\n{}",
                    self.name,
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
