//! Building the MIME message of a notification with lettre.
//!
//! lettre 0.11 already does most of the encoding right, and this module
//! covers the cases where it does not:
//!
//! - Display names: lettre quotes them, or writes RFC 2047 encoded words of
//!   at most 75 characters that never split a UTF-8 character. Names that
//!   need either, such as `Şmith, John`, therefore stay one mailbox.
//! - Subject: lettre writes ASCII words as they are and encodes runs of
//!   non-ASCII words. It cannot break an ASCII word longer than a line, and
//!   it leaves a word that looks like an encoded word (`=?...?=`) as it is,
//!   which readers would decode. In those two cases this module encodes the
//!   whole subject itself.
//! - Parts of `multipart/alternative`: lettre picks 7bit only for ASCII
//!   text whose lines are shorter than 76 octets, and quoted-printable or
//!   base64 otherwise, so no body line exceeds 76 octets. This module forces
//!   quoted-printable for text with control characters, which 7bit must not
//!   carry.
//! - Text-only emails: the body is always quoted-printable and ends with a
//!   soft line break. The SMTP client ends the data with CRLF `.` CRLF, and
//!   that CRLF would otherwise add a line break to the decoded text. After a
//!   soft line break it adds nothing.
//!
//! So the decoded body is the input text byte for byte, except that line
//! breaks are sent as CRLF, the canonical form of `text/*` (RFC 2046 section
//! 4.1.1): a lone CR or LF becomes CRLF.

use std::fmt::Display;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use lettre::message::header::{
    ContentTransferEncoding, ContentType, HeaderName, HeaderValue, MIME_VERSION_1_0,
};
use lettre::message::{Body, Mailbox, MultiPart, SinglePart};
use lettre::{Address, Message};
use notify_core::recipient::mask_email;
use notify_core::{Content, Notification, Recipient};

use super::error::{EmailError, HeaderField};

/// Maximum characters of a recipient display name. It keeps a name without
/// spaces, which lettre cannot fold, well below the 998-octet line limit of
/// RFC 5322.
pub const MAX_NAME_CHARS: usize = 256;

/// Maximum length of a quoted-printable line, soft line break included (RFC
/// 2045 section 6.7).
const MAX_QUOTED_PRINTABLE_LINE: usize = 76;

/// Maximum length of a subject word left to lettre, which writes an ASCII word on one
/// line however long it is. `Subject: ` and the folding space leave room up
/// to the 998-octet line limit.
const MAX_UNBROKEN_SUBJECT_WORD: usize = 900;

/// UTF-8 bytes per encoded word written by [`encode_words`]. 42 bytes become
/// 56 base64 characters and a 68-character encoded word, so that the first
/// line `Subject: ` plus one word stays within 78 characters.
const ENCODED_WORD_PAYLOAD: usize = 42;

/// The sender side of every message, validated once at construction.
#[derive(Debug, Clone)]
pub struct Sender {
    pub from: Mailbox,
    pub reply_to: Option<Mailbox>,
    /// Right-hand side of the `Message-ID`, already validated.
    pub message_id_domain: String,
}

/// Formats the `Message-ID` of a notification. It is the same on every
/// attempt, so receivers can recognize a retried email as a duplicate.
pub fn message_id(notification_id: &impl Display, domain: &str) -> String {
    format!("<{notification_id}@{domain}>")
}

/// Builds the email of `notification`.
///
/// # Errors
///
/// Returns a permanent [`EmailError`] when the notification is not an
/// email, when the address is invalid, or when the subject or the recipient
/// name contains a line break or another control character.
pub fn build_message(notification: &Notification, sender: &Sender) -> Result<Message, EmailError> {
    let Recipient::Email { email, name } = &notification.recipient else {
        return Err(EmailError::RecipientNotEmail);
    };
    let Content::Email(content) = &notification.content else {
        return Err(EmailError::ContentNotEmail);
    };

    let to = recipient_mailbox(email, name.as_deref())?;
    check_header_text(HeaderField::Subject, &content.subject)?;

    let mut builder = Message::builder()
        .from(sender.from.clone())
        .to(to)
        .message_id(Some(message_id(
            &notification.notification_id,
            &sender.message_id_domain,
        )));
    if let Some(reply_to) = &sender.reply_to {
        builder = builder.reply_to(reply_to.clone());
    }
    builder = match own_subject_encoding(&content.subject) {
        Some(header) => builder.raw_header(header),
        None => builder.subject(content.subject.as_str()),
    };

    let built = match &content.html {
        Some(html) => builder.multipart(
            MultiPart::alternative()
                .singlepart(text_part(ContentType::TEXT_PLAIN, &content.text))
                .singlepart(text_part(ContentType::TEXT_HTML, html)),
        ),
        None => builder
            .header(MIME_VERSION_1_0)
            .header(ContentType::TEXT_PLAIN)
            .body(single_part_body(&content.text)),
    };
    built.map_err(EmailError::Build)
}

/// Parses the recipient into a mailbox, rejecting names that could break
/// the `To` header. An empty or blank name counts as no name.
fn recipient_mailbox(email: &str, name: Option<&str>) -> Result<Mailbox, EmailError> {
    // Check before trimming, so that a name of only CR and LF is rejected too.
    if let Some(name) = name {
        check_header_text(HeaderField::RecipientName, name)?;
    }
    let name = name.map(str::trim).filter(|name| !name.is_empty());
    if let Some(name) = name {
        let length = name.chars().count();
        if length > MAX_NAME_CHARS {
            return Err(EmailError::NameTooLong {
                length,
                max: MAX_NAME_CHARS,
            });
        }
    }
    let address: Address =
        email.parse().map_err(
            |err: lettre::address::AddressError| EmailError::InvalidAddress {
                masked: mask_email(email),
                reason: err.to_string(),
            },
        )?;
    Ok(Mailbox::new(name.map(str::to_owned), address))
}

/// Rejects CR, LF and other control characters except tab, which could end
/// a header field early or are not allowed in one.
fn check_header_text(field: HeaderField, value: &str) -> Result<(), EmailError> {
    if value.contains(['\r', '\n']) {
        return Err(EmailError::LineBreak { field });
    }
    match value.chars().find(|c| c.is_control() && *c != '\t') {
        Some(c) => Err(EmailError::ControlCharacter {
            field,
            code_point: u32::from(c),
        }),
        None => Ok(()),
    }
}

/// Returns a pre-encoded `Subject` header when lettre's own encoding would
/// be wrong for `subject` (see the module documentation), and `None` when
/// lettre can encode it.
fn own_subject_encoding(subject: &str) -> Option<HeaderValue> {
    let looks_encoded = subject.contains("=?");
    let has_long_word = subject
        .split(' ')
        .any(|word| word.len() > MAX_UNBROKEN_SUBJECT_WORD);
    if !looks_encoded && !has_long_word {
        return None;
    }
    Some(HeaderValue::dangerous_new_pre_encoded(
        HeaderName::new_from_ascii_str("Subject"),
        subject.to_owned(),
        encode_words(subject),
    ))
}

/// Encodes `text` as RFC 2047 base64 encoded words, folded one per line.
/// Each word contains whole UTF-8 characters, so it decodes on its own.
fn encode_words(text: &str) -> String {
    let mut encoded = String::new();
    let mut rest = text;
    while !rest.is_empty() {
        // A character has at most 4 bytes and the payload is larger, so
        // `end` stays above 0.
        let mut end = rest.len().min(ENCODED_WORD_PAYLOAD);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (chunk, tail) = rest.split_at(end);
        if !encoded.is_empty() {
            // Folding whitespace between encoded words is not part of the text.
            encoded.push_str("\r\n ");
        }
        encoded.push_str("=?utf-8?b?");
        encoded.push_str(&BASE64.encode(chunk));
        encoded.push_str("?=");
        rest = tail;
    }
    encoded
}

/// Builds a `text/plain` or `text/html` part with CRLF line breaks, in the
/// transfer encoding lettre picks, or quoted-printable when the text has
/// control characters other than tab, CR and LF.
fn text_part(content_type: ContentType, text: &str) -> SinglePart {
    let text = crlf_line_breaks(text);
    let builder = SinglePart::builder().header(content_type);
    let has_control = text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\r' | '\n'));
    if has_control {
        builder
            .header(ContentTransferEncoding::QuotedPrintable)
            .body(text)
    } else {
        builder.body(text)
    }
}

/// Builds the quoted-printable body of a text-only email, ending with a soft line
/// break so that the CRLF that ends the SMTP data decodes to nothing.
fn single_part_body(text: &str) -> Body {
    let text = crlf_line_breaks(text);
    let mut encoded = match Body::new_with_encoding(text, ContentTransferEncoding::QuotedPrintable)
    {
        Ok(body) => body.into_vec(),
        // lettre rejects only 7bit and 8bit for unsuitable input, never
        // quoted-printable, so this arm is not reached.
        Err(unencoded) => unencoded,
    };
    append_soft_line_break(&mut encoded);
    Body::dangerous_pre_encoded(encoded, ContentTransferEncoding::QuotedPrintable)
}

/// Ends quoted-printable `encoded` with a soft line break (`=`). When the
/// last line is already at the length limit, its last encoded character
/// (`x` or `=XX`) moves to a new line first.
fn append_soft_line_break(encoded: &mut Vec<u8>) {
    let last_line_start = encoded
        .windows(2)
        .rposition(|pair| pair == b"\r\n")
        .map_or(0, |at| at + 2);
    let last_line_length = encoded.len() - last_line_start;
    if last_line_length + 1 > MAX_QUOTED_PRINTABLE_LINE {
        let last_unit_length = if encoded[encoded.len() - 3] == b'=' {
            3
        } else {
            1
        };
        let last_unit = encoded.split_off(encoded.len() - last_unit_length);
        encoded.extend_from_slice(b"=\r\n");
        encoded.extend_from_slice(&last_unit);
    }
    encoded.push(b'=');
}

/// Replaces every line break (CRLF, lone CR, lone LF) with CRLF.
fn crlf_line_breaks(text: &str) -> String {
    let mut normalized = String::with_capacity(text.len() + text.len() / 32);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                chars.next_if_eq(&'\n');
                normalized.push_str("\r\n");
            }
            '\n' => normalized.push_str("\r\n"),
            c => normalized.push(c),
        }
    }
    normalized
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_words_hold_whole_characters() {
        let text = "=?utf-8?q?looks_encoded?= ".to_owned() + &"ら".repeat(40);

        let encoded = encode_words(&text);

        let mut decoded = Vec::new();
        for word in encoded.split("\r\n ") {
            assert!(word.len() <= 75, "{word}");
            let payload = word
                .strip_prefix("=?utf-8?b?")
                .and_then(|w| w.strip_suffix("?="))
                .unwrap();
            let bytes = BASE64.decode(payload).unwrap();
            assert!(
                std::str::from_utf8(&bytes).is_ok(),
                "{word} splits a character"
            );
            decoded.extend(bytes);
        }
        assert_eq!(String::from_utf8(decoded).unwrap(), text);
    }

    #[test]
    fn subject_that_looks_encoded_is_encoded() {
        assert!(own_subject_encoding("Order =?utf-8?b?SGk=?= shipped").is_some());
        assert!(own_subject_encoding(&"x".repeat(MAX_UNBROKEN_SUBJECT_WORD + 1)).is_some());
        assert!(own_subject_encoding("Livraison retardée").is_none());
    }

    #[test]
    fn soft_line_break_respects_line_limit() {
        let cases: [(&[u8], &[u8]); 5] = [
            (b"", b"="),
            (b"abc", b"abc="),
            (b"abc\r\n", b"abc\r\n="),
            (&[b'a'; 76], &[&[b'a'; 75][..], b"=\r\na="].concat()),
            (
                &[&[b'a'; 73][..], b"=3D"].concat(),
                &[&[b'a'; 73][..], b"=\r\n=3D="].concat(),
            ),
        ];
        for (input, expected) in cases {
            let mut encoded = input.to_vec();
            append_soft_line_break(&mut encoded);
            assert_eq!(
                String::from_utf8_lossy(&encoded),
                String::from_utf8_lossy(expected)
            );
        }
    }

    #[test]
    fn name_of_only_line_breaks_is_rejected() {
        let result = recipient_mailbox("user@example.com", Some("\r\n"));

        assert!(matches!(
            result,
            Err(EmailError::LineBreak {
                field: HeaderField::RecipientName
            })
        ));
    }

    #[test]
    fn line_breaks_become_crlf() {
        assert_eq!(crlf_line_breaks("a\nb\r\nc\rd\r"), "a\r\nb\r\nc\r\nd\r\n");
    }

    #[test]
    fn header_text_with_control_characters_is_rejected() {
        assert!(matches!(
            check_header_text(HeaderField::Subject, "A\r\nBcc: x@example.net"),
            Err(EmailError::LineBreak {
                field: HeaderField::Subject
            })
        ));
        assert!(matches!(
            check_header_text(HeaderField::RecipientName, "Ann\u{0}"),
            Err(EmailError::ControlCharacter {
                field: HeaderField::RecipientName,
                code_point: 0
            })
        ));
        assert!(check_header_text(HeaderField::Subject, "Tab\tseparated").is_ok());
    }
}
