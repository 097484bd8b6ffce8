//! SMS encoding and segmentation as defined by 3GPP TS 23.038 (the GSM 7-bit
//! default alphabet and its extension table) and TS 23.040 (concatenated
//! messages).
//!
//! A body that only uses GSM-7 characters is sent in septets: 160 fit one
//! segment, and a multipart message carries 153 per segment because the
//! concatenation header takes the rest. Characters of the extension table are
//! an escape septet plus one more, so they count 2. Any other character forces
//! UCS-2 (UTF-16) for the whole body: 70 code units fit one segment, 67 per
//! segment of a multipart message, and a character outside the Basic
//! Multilingual Plane takes 2 units (a surrogate pair).
//!
//! Splitting never cuts an escape sequence or a surrogate pair: a character
//! that does not fit the rest of a segment starts the next one.
//!
//! NOTE: providers may transliterate characters before sending (Twilio's
//! Smart Encoding, for one), which can lower the count they bill. This module
//! counts the body exactly as given.

use std::fmt;

/// Character set a body is sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// GSM 7-bit default alphabet with its extension table.
    Gsm7,
    /// UCS-2, in practice UTF-16.
    Ucs2,
}

impl Encoding {
    /// Name in receipts: `gsm7` or `ucs2`.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Gsm7 => "gsm7",
            Encoding::Ucs2 => "ucs2",
        }
    }

    /// Maximum units (septets or UTF-16 code units) of a message sent as one segment.
    pub fn single_segment_units(self) -> usize {
        match self {
            Encoding::Gsm7 => 160,
            Encoding::Ucs2 => 70,
        }
    }

    /// Maximum units of each segment of a multipart message.
    pub fn multipart_segment_units(self) -> usize {
        match self {
            Encoding::Gsm7 => 153,
            Encoding::Ucs2 => 67,
        }
    }

    /// Units that `c` takes in this encoding. For GSM-7, `c` must be a GSM-7
    /// character.
    fn units_of(self, c: char) -> usize {
        match self {
            Encoding::Gsm7 => gsm7_septets(c).unwrap_or(1),
            Encoding::Ucs2 => c.len_utf16(),
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Characters of the GSM-7 default alphabet, one septet each. The escape
/// code 0x1B is left out because it only starts an extension character.
const GSM7_BASIC: &str = concat!(
    "@£$¥èéùìòÇ\nØø\rÅå",
    "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ",
    " !\"#¤%&'()*+,-./",
    "0123456789:;<=>?",
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§",
    "¿abcdefghijklmnopqrstuvwxyzäöñüà",
);

/// Characters of the GSM-7 extension table, an escape septet plus one more
/// each. `\u{c}` is form feed, the table's page break.
const GSM7_EXTENSION: &str = "\u{c}^{}\\[~]|€";

/// Returns the septets `c` takes in GSM-7, or `None` when GSM-7 lacks it.
pub fn gsm7_septets(c: char) -> Option<usize> {
    if GSM7_BASIC.contains(c) {
        Some(1)
    } else if GSM7_EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// A body split into the segments it is sent as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segmentation<'a> {
    pub encoding: Encoding,
    /// Length of the whole body in septets (GSM-7) or UTF-16 code units (UCS-2).
    pub units: usize,
    /// The body's text per segment, in order. An empty body is one empty segment.
    pub segments: Vec<&'a str>,
}

impl Segmentation<'_> {
    /// Number of segments.
    pub fn count(&self) -> usize {
        self.segments.len()
    }
}

/// Picks the encoding of `body`: GSM-7 when every character has a GSM-7
/// code, UCS-2 otherwise.
pub fn encoding_of(body: &str) -> Encoding {
    if body.chars().all(|c| gsm7_septets(c).is_some()) {
        Encoding::Gsm7
    } else {
        Encoding::Ucs2
    }
}

/// Splits `body` into segments.
pub fn segment(body: &str) -> Segmentation<'_> {
    let encoding = encoding_of(body);
    let units: usize = body.chars().map(|c| encoding.units_of(c)).sum();

    if units <= encoding.single_segment_units() {
        return Segmentation {
            encoding,
            units,
            segments: vec![body],
        };
    }

    let limit = encoding.multipart_segment_units();
    let mut segments = Vec::new();
    let mut start = 0;
    let mut filled = 0;
    for (index, c) in body.char_indices() {
        let width = encoding.units_of(c);
        // A character that does not fit whole starts the next segment, which
        // keeps escape sequences and surrogate pairs in one piece.
        if filled + width > limit {
            segments.push(&body[start..index]);
            start = index;
            filled = 0;
        }
        filled += width;
    }
    segments.push(&body[start..]);

    Segmentation {
        encoding,
        units,
        segments,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_alphabet_has_127_characters() {
        // 128 codes minus the escape code.
        assert_eq!(GSM7_BASIC.chars().count(), 127);
    }

    #[test]
    fn extension_characters_take_two_septets() {
        for c in ['^', '{', '}', '\\', '[', '~', ']', '|', '€', '\u{c}'] {
            assert_eq!(gsm7_septets(c), Some(2), "{c:?}");
        }
    }

    #[test]
    fn basic_characters_take_one_septet() {
        for c in [
            '@', '£', 'Δ', 'ß', ' ', '\n', '\r', '¡', '§', '¿', 'à', 'Z', '0',
        ] {
            assert_eq!(gsm7_septets(c), Some(1), "{c:?}");
        }
    }

    #[test]
    fn characters_outside_gsm7_are_detected() {
        for c in ['’', '`', 'ç', 'á', 'Ж', '😘', '\u{0}', '\t'] {
            assert_eq!(gsm7_septets(c), None, "{c:?}");
        }
    }

    #[test]
    fn euro_sign_at_limit_stays_single_segment() {
        let body = format!("{}€", "a".repeat(158));

        let result = segment(&body);

        assert_eq!(result.units, 160);
        assert_eq!(result.count(), 1);
    }

    #[test]
    fn ucs2_limits_are_70_and_67() {
        let single = "ж".repeat(70);
        let double = "ж".repeat(71);
        let triple = "ж".repeat(135);

        assert_eq!(segment(&single).count(), 1);
        assert_eq!(segment(&double).count(), 2);
        assert_eq!(segment(&triple).count(), 3);
    }

    #[test]
    fn gsm7_multipart_fills_153_septets() {
        let body = "a".repeat(153 * 3);

        let result = segment(&body);

        assert_eq!(result.count(), 3);
        assert!(result.segments.iter().all(|part| part.len() == 153));
    }

    #[test]
    fn empty_body_is_one_empty_segment() {
        let result = segment("");

        assert_eq!(result.encoding, Encoding::Gsm7);
        assert_eq!(result.units, 0);
        assert_eq!(result.segments, [""]);
    }
}
