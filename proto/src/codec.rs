//! The codec of the KMS v2 service: prost's, except that a request the
//! server cannot decode is `INVALID_ARGUMENT` ("malformed request: ...")
//! instead of prost's `INTERNAL`. A malformed message is the caller's
//! fault; `INTERNAL` would count it with the provider's own failures.

use std::marker::PhantomData;

use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// prost encoding with decode errors as `INVALID_ARGUMENT`.
#[derive(Debug, Clone, Copy)]
pub struct KmsCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for KmsCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for KmsCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = KmsDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        KmsDecoder(ProstDecoder::default())
    }
}

/// prost's decoder; its errors become `INVALID_ARGUMENT`.
#[derive(Debug, Clone)]
pub struct KmsDecoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for KmsDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0
            .decode(buf)
            .map_err(|e| Status::invalid_argument(format!("malformed request: {}", e.message())))
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
