//! Output kept in a file: read from its start, or from its last lines.

use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// The most of a file read to find its last lines.
const TAIL_WINDOW: u64 = 8 << 20;

/// Opens the output at `path` and reads all of it, or its last `tail` lines; the file is left
/// at its end, for a reader that follows it.
pub async fn open(path: &Path, tail: Option<usize>) -> std::io::Result<(tokio::fs::File, Vec<u8>)> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut text = Vec::new();
    match tail {
        Some(lines) => {
            let length = file.metadata().await?.len();
            file.seek(std::io::SeekFrom::Start(length.saturating_sub(TAIL_WINDOW)))
                .await?;
            file.read_to_end(&mut text).await?;
            text = last_lines(&text, lines).to_vec();
        }
        None => {
            file.read_to_end(&mut text).await?;
        }
    }
    Ok((file, text))
}

/// The last `lines` lines of `text`.
fn last_lines(text: &[u8], lines: usize) -> &[u8] {
    if lines == 0 {
        return &[];
    }
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let start = body
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, b)| **b == b'\n')
        .nth(lines - 1)
        .map(|(i, _)| i + 1)
        .unwrap_or(0);
    &text[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_counts_from_the_end() {
        assert_eq!(last_lines(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(last_lines(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(last_lines(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(last_lines(b"a\n", 0), b"");
    }
}
