//! Everything the bounce role reads from the outside world, fed arbitrary bytes: the whole
//! analysis of one message, the mbox splitter, the `inspect` lines, and the synchronous reply
//! classifier. None may panic.
#![no_main]

use std::sync::Once;

use libfuzzer_sys::fuzz_target;

static HOOK: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    // libfuzzer-sys aborts in its panic hook, before any unwinding. `analyse` catches panics
    // inside mail-parser on purpose (see `parse_guarded`), so the hook must let those unwind;
    // any other panic still escapes this closure, and libfuzzer-sys aborts on it.
    HOOK.call_once(|| std::panic::set_hook(Box::new(|info| eprintln!("{info}"))));
    let analysis = mailfarm_bounce::analyse(data);
    let _ = mailfarm_bounce::lines_for("fuzz", 1, &analysis);
    for message in mailfarm_bounce::split_mbox(data) {
        let _ = mailfarm_bounce::analyse(message);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let code = data.first().map_or(550, |&b| 200 + u16::from(b) * 2);
        let _ = mailfarm_bounce::classify_reply(code, text.get(..5), text);
        let _ = mailfarm_bounce::decode_verp(text);
    }
});
