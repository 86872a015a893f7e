//! Every decoder that reads from the network, fed arbitrary bytes in arbitrary chunks: the
//! frame decoder and the postcard decoding of each message type a peer can send. None may
//! panic or allocate beyond the frame limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailfarm_protocol::{
    decode_message, CoordinatorMessage, FrameDecoder, Hello, HelloReply, OperatorRequest,
    OperatorResponse, SmurfMessage,
};

fuzz_target!(|data: &[u8]| {
    let _ = decode_message::<Hello>(data);
    let _ = decode_message::<HelloReply>(data);
    let _ = decode_message::<SmurfMessage>(data);
    let _ = decode_message::<CoordinatorMessage>(data);
    let _ = decode_message::<OperatorRequest>(data);
    let _ = decode_message::<OperatorResponse>(data);
    // The first byte picks a chunk size, the rest is the stream.
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let mut decoder = FrameDecoder::new(64 * 1024);
    for piece in stream.chunks(usize::from(chunk).max(1)) {
        decoder.push(piece);
        while let Ok(Some(_)) = decoder.next_message::<SmurfMessage>() {}
    }
    let _ = decoder.finish();
});
