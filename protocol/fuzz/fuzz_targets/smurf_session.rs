//! The smurf's session state machine driven by arbitrary coordinator messages (decoded from
//! the fuzz input): it must answer every sequence with events or errors, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailfarm_protocol::{decode_message, CoordinatorMessage, HelloReply, SmurfLink};

fuzz_target!(|data: &[u8]| {
    let mut link = SmurfLink::new(16, []);
    let mut rest = data;
    let mut first = true;
    while rest.len() > 2 {
        let len = usize::from(rest[0]).min(rest.len() - 1);
        let (body, tail) = rest[1..].split_at(len);
        rest = tail;
        if first {
            first = false;
            if let Ok(reply) = decode_message::<HelloReply>(body) {
                let _ = link.on_hello_reply(reply);
            }
            continue;
        }
        if let Ok(message) = decode_message::<CoordinatorMessage>(body) {
            let _ = link.on_message(message);
            link.results_sent(usize::from(rest.first().copied().unwrap_or(0)));
        }
    }
});
