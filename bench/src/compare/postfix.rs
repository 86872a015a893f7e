//! The traditional pipeline: a private Postfix instance (`postfix -c DIR start`, its own queue,
//! log and ports; no system configuration touched) that accepts personalised messages over SMTP
//! from loopback and relays every one to the sink (`relayhost`), as an MTA behind a newsletter
//! application does. The injector is a plain SMTP client (PIPELINING of MAIL/RCPT/DATA) over
//! parallel sessions; the messages are rendered before the clock starts, so the figures are
//! Postfix's alone.
//!
//! Latency comes from Postfix's own log: `delay=` on each `status=sent` line is the time from
//! the message's arrival (injection) to the sink's 250.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;

use anyhow::{bail, Context};

use super::render::Prepared;
use crate::postfix::PrivatePostfix;

/// main.cf lines of the relay, after the shared base: everything to the sink.
const MAIN_CF: &str = "\
myhostname = relay.bench.test
local_recipient_maps =
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:@SINK_PORT@
smtp_tls_security_level = none
smtp_destination_concurrency_limit = @CONC@
initial_destination_concurrency = @CONC@
";

/// A running private Postfix relay; stopped when dropped.
pub struct PostfixRelay {
    instance: PrivatePostfix,
    /// Its smtpd.
    pub addr: SocketAddr,
}

impl PostfixRelay {
    /// Starts `postfix` relaying everything to `sink` over at most `concurrency` sessions.
    /// Needs root (the master drops privileges) and the `postfix` user.
    pub fn start(postfix: &Path, sink: SocketAddr, concurrency: usize) -> anyhow::Result<Self> {
        let main_cf = MAIN_CF
            .replace("@SINK_PORT@", &sink.port().to_string())
            .replace("@CONC@", &concurrency.to_string());
        let instance = PrivatePostfix::start(postfix, &main_cf)?;
        Ok(Self {
            addr: instance.addr,
            instance,
        })
    }

    /// The master's pid: every Postfix process of the instance descends from it.
    pub fn master_pid(&self) -> anyhow::Result<u32> {
        self.instance.master_pid()
    }

    /// Queue files not yet delivered (incoming, active, deferred, hold, maildrop).
    pub fn queued(&self) -> u64 {
        self.instance
            .queue_files(&["incoming", "active", "deferred", "hold", "maildrop"])
    }

    /// Seconds from arrival to the relay's 250 of every message delivered (`delay=` of each
    /// `status=sent` log line), in log order.
    pub fn delivery_delays(&self) -> Vec<f64> {
        let log = std::fs::read_to_string(self.instance.dir().join("maillog")).unwrap_or_default();
        parse_delays(&log)
    }
}

/// The `delay=` values of `status=sent` lines.
pub fn parse_delays(log: &str) -> Vec<f64> {
    log.lines()
        .filter(|l| l.contains("status=sent"))
        .filter_map(|l| {
            l.split([' ', ','])
                .find_map(|f| f.strip_prefix("delay="))
                .and_then(|v| v.parse().ok())
        })
        .collect()
}

/// Sends `messages` to `addr` over `sessions` parallel SMTP sessions (each message in its own
/// transaction, MAIL/RCPT/DATA pipelined); returns when every one got its 250.
pub fn inject(addr: SocketAddr, messages: &[Prepared], sessions: usize) -> anyhow::Result<()> {
    let sessions = sessions.clamp(1, messages.len().max(1));
    let per = messages.len().div_ceil(sessions);
    std::thread::scope(|scope| {
        let workers: Vec<_> = messages
            .chunks(per.max(1))
            .map(|chunk| scope.spawn(move || session(addr, chunk)))
            .collect();
        for worker in workers {
            match worker.join() {
                Ok(result) => result?,
                Err(_) => bail!("an injector thread panicked"),
            }
        }
        Ok(())
    })
}

/// One SMTP session sending `messages` in turn.
fn session(addr: SocketAddr, messages: &[Prepared]) -> anyhow::Result<()> {
    let stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = std::io::BufWriter::with_capacity(64 * 1024, stream);
    expect(&mut reader, 220, "greeting")?;
    writer.write_all(b"EHLO injector.bench.test\r\n")?;
    writer.flush()?;
    expect(&mut reader, 250, "EHLO")?;
    for m in messages {
        write!(
            writer,
            "MAIL FROM:<{}>\r\nRCPT TO:<{}>\r\nDATA\r\n",
            m.from, m.to
        )?;
        writer.flush()?;
        expect(&mut reader, 250, "MAIL FROM")?;
        expect(&mut reader, 250, "RCPT TO")?;
        expect(&mut reader, 354, "DATA")?;
        writer.write_all(&m.data)?;
        writer.write_all(b".\r\n")?;
        writer.flush()?;
        expect(&mut reader, 250, "end of data")?;
    }
    writer.write_all(b"QUIT\r\n")?;
    writer.flush()?;
    Ok(())
}

/// Reads one (possibly multi-line) reply and checks its code.
fn expect(reader: &mut impl BufRead, code: u16, what: &str) -> anyhow::Result<()> {
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            bail!("connection closed waiting for the reply to {what}");
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            break;
        }
    }
    let got: u16 = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
    if got != code {
        bail!("{what}: expected {code}, got {}", line.trim_end());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_come_from_sent_lines_only() {
        let log = "Dec  2 04:00:01 h mailfarm-bench/smtp[9]: 4A: to=<a@b>, relay=127.0.0.1[127.0.0.1]:25, \
                   delay=0.12, delays=0.01/0/0.01/0.1, dsn=2.0.0, status=sent (250 Ok)\n\
                   Dec  2 04:00:01 h mailfarm-bench/smtp[9]: 4B: to=<c@d>, delay=3.5, status=deferred\n\
                   Dec  2 04:00:02 h mailfarm-bench/smtp[9]: 4C: to=<e@f>, delay=1, status=sent (250)\n";
        assert_eq!(parse_delays(log), vec![0.12, 1.0]);
    }
}
