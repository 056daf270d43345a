//! Reading a partner's bundle ([`crate::output::BUNDLE`]): every STAC document
//! of the site in one gzip stream of `<path>\t<sha256>\t<length>\n<bytes>\n`
//! records. Untrusted like every partner byte: lengths are bounded, digests
//! are checked, and a malformed record ends the read with an error naming it
//! (the harvest then fetches what is left one document at a time).

use std::io::{BufRead, Read};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

pub struct Record {
    pub path: String,
    /// SHA-256 (hex) of `bytes`, checked.
    pub sha256: String,
    pub bytes: Vec<u8>,
}

pub struct BundleReader<R> {
    inner: R,
    max_document_bytes: u64,
    records: usize,
    failed: bool,
}

impl<R: BufRead> BundleReader<R> {
    pub fn new(inner: R, max_document_bytes: u64) -> Self {
        BundleReader { inner, max_document_bytes, records: 0, failed: false }
    }

    fn next_record(&mut self) -> Result<Option<Record>> {
        let at = self.records + 1;
        let mut head = Vec::new();
        // A header line is a path, a digest and a number: bounded well below a document.
        let n = (&mut self.inner).take(4096).read_until(b'\n', &mut head).with_context(|| format!("bundle record {at}"))?;
        if n == 0 {
            return Ok(None);
        }
        let head = std::str::from_utf8(&head).ok().and_then(|h| h.strip_suffix('\n')).with_context(|| format!("bundle record {at}: unreadable header"))?;
        let mut fields = head.split('\t');
        let (Some(path), Some(sha), Some(len), None) = (fields.next(), fields.next(), fields.next(), fields.next()) else {
            bail!("bundle record {at}: header {head:?} is not <path>\\t<sha256>\\t<length>");
        };
        let len: u64 = len.parse().with_context(|| format!("bundle record {at} ({path}): length {len:?}"))?;
        if len > self.max_document_bytes {
            bail!("bundle record {at} ({path}): {len} bytes is over the size limit of {} bytes", self.max_document_bytes);
        }
        // Not zeroed first: the record is read straight into its buffer.
        let mut bytes = Vec::with_capacity(len as usize + 1);
        let read = (&mut self.inner).take(len + 1).read_to_end(&mut bytes).with_context(|| format!("bundle record {at} ({path})"))?;
        if read as u64 != len + 1 {
            bail!("bundle record {at} ({path}): cut short");
        }
        if bytes.pop() != Some(b'\n') {
            bail!("bundle record {at} ({path}): not {len} bytes long");
        }
        let actual = hex::encode(Sha256::digest(&bytes));
        if actual != sha {
            bail!("bundle record {at} ({path}): SHA-256 {actual} differs from the stated {sha}");
        }
        self.records = at;
        Ok(Some(Record { path: path.to_string(), sha256: actual, bytes }))
    }
}

impl<R: BufRead> Iterator for BundleReader<R> {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        if self.failed {
            return None;
        }
        let next = self.next_record().transpose();
        self.failed = matches!(next, Some(Err(_)));
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(path: &str, body: &[u8]) -> Vec<u8> {
        let mut out = format!("{path}\t{}\t{}\n", hex::encode(Sha256::digest(body)), body.len()).into_bytes();
        out.extend_from_slice(body);
        out.push(b'\n');
        out
    }

    #[test]
    fn reads_records_and_stops_at_the_first_bad_one() {
        let mut data = record("catalog.json", b"{\"a\":\n1}");
        data.extend(record("x/item.json", b"{}"));
        let got: Vec<_> = BundleReader::new(&data[..], 100).collect::<Result<_>>().unwrap();
        assert_eq!(got.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(), ["catalog.json", "x/item.json"]);
        assert_eq!(got[0].bytes, b"{\"a\":\n1}");

        let mut bad = record("a.json", b"{}");
        bad.extend(b"b.json\t00\t2\n{}\n");
        bad.extend(record("c.json", b"{}"));
        let got: Vec<_> = BundleReader::new(&bad[..], 100).collect();
        assert_eq!(got.len(), 2);
        assert!(format!("{:#}", got[1].as_ref().err().unwrap()).contains("b.json"));

        let huge = record("h.json", &[b' '; 200]);
        assert!(BundleReader::new(&huge[..], 100).next().unwrap().is_err());
        let cut = &record("c.json", b"{\"long\": true}")[..20];
        assert!(BundleReader::new(cut, 100).next().unwrap().is_err());
    }
}
