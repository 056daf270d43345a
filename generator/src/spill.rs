//! An external sort for what a build must hand back in order at its end
//! (the catalogue pages' item rows): records are buffered up to a fixed size,
//! sorted, and written out as runs to anonymous temp files (deleted by the
//! system when closed, even after a crash); [`Spill::finish`] merges the runs
//! back in key order. Memory stays at the buffer size plus one read buffer
//! per run, whatever the number of records. A build small enough to fit in
//! the buffer never touches the disk.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{BufReader, BufWriter, Read, Write};

use anyhow::{Context, Result};

/// Bytes of records buffered before a run is written.
const RUN_BYTES: usize = 4 << 20;

/// Records (key, value), handed back sorted by key (ties in insertion order).
pub struct Spill {
    /// Keys and values, back to back.
    data: Vec<u8>,
    /// (offset in `data`, key length, value length) per buffered record.
    records: Vec<(usize, u32, u32)>,
    runs: Vec<std::fs::File>,
    limit: usize,
}

impl Default for Spill {
    fn default() -> Self {
        Spill::with_run_bytes(RUN_BYTES)
    }
}

impl Spill {
    pub fn with_run_bytes(limit: usize) -> Spill {
        Spill { data: Vec::new(), records: Vec::new(), runs: Vec::new(), limit }
    }

    pub fn push(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.records.push((self.data.len(), key.len() as u32, value.len() as u32));
        self.data.extend_from_slice(key);
        self.data.extend_from_slice(value);
        if self.data.len() + self.records.len() * std::mem::size_of::<(usize, u32, u32)>() >= self.limit {
            self.write_run()?;
        }
        Ok(())
    }

    fn sort(&mut self) {
        let data = &self.data;
        self.records.sort_by(|a, b| data[a.0..a.0 + a.1 as usize].cmp(&data[b.0..b.0 + b.1 as usize]));
    }

    fn write_run(&mut self) -> Result<()> {
        self.sort();
        let file = tempfile::tempfile().context("creating a temp file for sorting")?;
        let mut out = BufWriter::new(file);
        for &(at, k, v) in &self.records {
            out.write_all(&k.to_le_bytes())?;
            out.write_all(&v.to_le_bytes())?;
            out.write_all(&self.data[at..at + k as usize + v as usize])?;
        }
        let mut file = out.into_inner().map_err(|e| e.into_error()).context("writing a sort run")?;
        std::io::Seek::rewind(&mut file)?;
        self.runs.push(file);
        self.records = Vec::new();
        self.data = Vec::new();
        Ok(())
    }

    /// The records in key order.
    pub fn finish(mut self) -> Result<Sorted> {
        if self.runs.is_empty() {
            self.sort();
            let records = std::mem::take(&mut self.records);
            return Ok(Sorted::Memory { data: std::mem::take(&mut self.data), records: records.into_iter() });
        }
        if !self.records.is_empty() {
            self.write_run()?;
        }
        let mut readers: Vec<BufReader<std::fs::File>> = self.runs.drain(..).map(|f| BufReader::with_capacity(16 << 10, f)).collect();
        let mut heap = BinaryHeap::new();
        for (i, r) in readers.iter_mut().enumerate() {
            if let Some((k, v)) = read_record(r)? {
                heap.push(Reverse((k, i, v)));
            }
        }
        Ok(Sorted::Runs { readers, heap })
    }
}

fn read_record(r: &mut impl Read) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
    let mut len = [0u8; 8];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e).context("reading a sort run"),
    }
    let k = u32::from_le_bytes(len[..4].try_into().expect("4 bytes")) as usize;
    let v = u32::from_le_bytes(len[4..].try_into().expect("4 bytes")) as usize;
    let mut key = vec![0u8; k];
    r.read_exact(&mut key).context("reading a sort run")?;
    let mut value = vec![0u8; v];
    r.read_exact(&mut value).context("reading a sort run")?;
    Ok(Some((key, value)))
}

/// Records coming back in key order: from memory, or merged from the runs
/// (equal keys in run order, which is insertion order).
pub enum Sorted {
    Memory { data: Vec<u8>, records: std::vec::IntoIter<(usize, u32, u32)> },
    Runs { readers: Vec<BufReader<std::fs::File>>, heap: BinaryHeap<Reverse<(Vec<u8>, usize, Vec<u8>)>> },
}

impl Iterator for Sorted {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Sorted::Memory { data, records } => {
                let (at, k, v) = records.next()?;
                let (k, v) = (k as usize, v as usize);
                Some(Ok((data[at..at + k].to_vec(), data[at + k..at + k + v].to_vec())))
            }
            Sorted::Runs { readers, heap } => {
                let Reverse((key, i, value)) = heap.pop()?;
                match read_record(&mut readers[i]) {
                    Ok(Some((k, v))) => heap.push(Reverse((k, i, v))),
                    Ok(None) => {}
                    Err(e) => return Some(Err(e)),
                }
                Some(Ok((key, value)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_records_back_in_key_order_from_memory_and_from_runs() {
        for limit in [1 << 20, 64] {
            let mut s = Spill::with_run_bytes(limit);
            let mut want = Vec::new();
            for i in 0..500u32 {
                let key = format!("k{:05}", (i * 7919) % 1000).into_bytes();
                let value = i.to_le_bytes().to_vec();
                s.push(&key, &value).unwrap();
                want.push((key, value));
            }
            want.sort_by(|a, b| a.0.cmp(&b.0));
            let got: Vec<_> = s.finish().unwrap().map(Result::unwrap).collect();
            assert_eq!(got, want, "limit {limit}");
        }
        assert_eq!(Spill::default().finish().unwrap().count(), 0);
    }
}
