//! Fuzzing of the bearer-token decoder: tampered tokens and arbitrary text. Each property runs
//! `PROPTEST_CASES` cases (256 unless set); `scripts/fuzz N` runs N each in release mode. A
//! failure is shrunk, printed and kept in `fuzz.proptest-regressions` beside this file, to be
//! turned into a test of its own.

use std::sync::LazyLock;
use std::time::Duration;

use dora_apiserver::{IssuedToken, TokenClaims, TokenKey};
use proptest::prelude::*;

static KEY: LazyLock<TokenKey> =
    LazyLock::new(|| TokenKey::from_secret(&TokenKey::generate_secret()).unwrap());

static ISSUED: LazyLock<IssuedToken> = LazyLock::new(|| {
    let claims = TokenClaims {
        zone: Some("default".into()),
        workspace: Some("default".into()),
        ..TokenClaims::default()
    };
    KEY.issue("alice", Duration::from_secs(3600), claims)
        .unwrap()
});

/// The characters of a token: base64url and the dots between its five parts.
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ ";

/// One change to a token; positions wrap around its length.
#[derive(Debug, Clone)]
enum Edit {
    Replace {
        at: usize,
        with: usize,
    },
    Insert {
        at: usize,
        with: usize,
    },
    Delete {
        at: usize,
        len: u8,
    },
    /// A part (between dots) replaced by the same part of another token.
    Swap {
        part: usize,
    },
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 0..ALPHABET.len()).prop_map(|(at, with)| Edit::Replace { at, with }),
        (any::<usize>(), 0..ALPHABET.len()).prop_map(|(at, with)| Edit::Insert { at, with }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, len)| Edit::Delete { at, len }),
        (0..5usize).prop_map(|part| Edit::Swap { part }),
    ]
}

/// Another token of the same key, for part swaps.
static OTHER: LazyLock<String> = LazyLock::new(|| {
    KEY.issue("mallory", Duration::from_secs(3600), TokenClaims::default())
        .unwrap()
        .token
});

fn tamper(token: &str, edits: &[Edit]) -> String {
    let mut bytes = token.as_bytes().to_vec();
    for edit in edits {
        let at = |at: usize, len: usize| at % (len + 1);
        match *edit {
            Edit::Replace { at: a, with } if !bytes.is_empty() => {
                let a = a % bytes.len();
                bytes[a] = ALPHABET[with];
            }
            Edit::Replace { .. } => {}
            Edit::Insert { at: a, with } => {
                let a = at(a, bytes.len());
                bytes.insert(a, ALPHABET[with]);
            }
            Edit::Delete { at: a, len } => {
                let a = at(a, bytes.len());
                let end = (a + usize::from(len)).min(bytes.len());
                bytes.drain(a..end);
            }
            Edit::Swap { part } => {
                let text = String::from_utf8(bytes.clone()).unwrap();
                let mut parts: Vec<&str> = text.split('.').collect();
                if let Some(theirs) = OTHER.split('.').nth(part)
                    && part < parts.len()
                {
                    parts[part] = theirs;
                }
                bytes = parts.join(".").into_bytes();
            }
        }
    }
    String::from_utf8(bytes).unwrap()
}

proptest! {
    /// A changed token is refused, unless it decodes to the very bytes of a token (base64 may
    /// leave unused bits in a part's last character; swapping every part makes the other
    /// token), and then it is that token.
    #[test]
    fn tampered_tokens_are_refused(edits in prop::collection::vec(edit(), 1..6)) {
        let tampered = tamper(&ISSUED.token, &edits);
        if let Some(verified) = KEY.verify(&tampered) {
            let tokens = [KEY.verify(&ISSUED.token).unwrap(), KEY.verify(&OTHER).unwrap()];
            prop_assert!(tokens.contains(&verified), "{tampered} verified as {verified:?}");
        }
    }

    #[test]
    fn arbitrary_text_is_no_token(text in "[A-Za-z0-9_.=-]{0,400}|(\\.?[A-Za-z0-9_-]{0,60}){5}|\\PC{0,200}") {
        prop_assert!(KEY.verify(&text).is_none());
    }
}
