use thiserror::Error;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the codec. Every one of them is the input's fault (a hostile or corrupt
/// record), except `Encode`, which means a value we built does not fit its schema: a bug.
#[derive(Debug, Error)]
pub enum Error {
    #[error("not avro single-object encoding: {0}")]
    NotSingleObject(&'static str),
    #[error("schema fingerprint {fingerprint} is not {expected}")]
    WrongSchema {
        expected: &'static str,
        fingerprint: String,
    },
    #[error("{schema}: {message}")]
    Decode {
        schema: &'static str,
        message: String,
    },
    #[error("{schema}: {trailing} trailing bytes after the datum")]
    TrailingBytes {
        schema: &'static str,
        trailing: usize,
    },
    #[error("invalid schema: {0}")]
    InvalidSchema(String),
    #[error("{schema}: cannot encode: {message}")]
    Encode {
        schema: &'static str,
        message: String,
    },
}

impl Error {
    /// True when the bytes were at fault (reject the record); false for a bug of ours.
    pub fn is_input_fault(&self) -> bool {
        !matches!(self, Error::Encode { .. })
    }
}
