//! The protobuf codec of keymint's services: prost's encoding, except that a request that does not decode is the
//! caller's mistake (INVALID_ARGUMENT, where tonic-prost says INTERNAL), and that a request's counts are checked
//! before it is decoded, and so before authentication or any other work.

use std::marker::PhantomData;

use prost::{Message, bytes::Buf};
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder},
};
use tonic_prost::ProstEncoder;

use crate::domain::validate::Violations;

use crate::api::{
    error,
    net::limits::{self, Bounded},
};

/// Named by build.rs (`codec_path`) for every keymint service, server and client.
#[derive(Debug)]
pub struct KeymintCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for KeymintCodec<T, U> {
    fn default() -> Self {
        KeymintCodec(PhantomData)
    }
}

impl<T, U> Codec for KeymintCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Bounded + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = KeymintDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        KeymintDecoder(PhantomData)
    }
}

#[derive(Debug)]
pub struct KeymintDecoder<U>(PhantomData<U>);

impl<U: Message + Default + Bounded> Decoder for KeymintDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        // The buffer holds the whole message; taking it as Bytes copies nothing.
        let message = buf.copy_to_bytes(buf.remaining());
        let mut violations = Violations::new();
        limits::check_encoded(&message, U::LIMITS, &mut violations);
        violations.into_result().map_err(|e| error::status(e.into()))?;
        // prost's error names the field that failed and why; it never repeats the bytes.
        let message = U::decode(message)
            .map_err(|e| error::malformed(format!("the request is not valid protobuf: {e}")))?;
        Ok(Some(message))
    }
}
