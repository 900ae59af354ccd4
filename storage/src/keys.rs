//! Key layout of the single sled tree. Numbers are big-endian so that scans come out in order.
//!
//! | prefix | key                         | value                          |
//! |--------|-----------------------------|--------------------------------|
//! | `m/`   | `schema`, `next_case`, `audit_head` | version byte, u64, head |
//! | `m/`   | `next_effect`               | the next effect's sequence (u64) |
//! | `m/marker/` | marker name            | a point in time (u64 millis)   |
//! | `c/`   | case id (u64)               | case                           |
//! | `v/`   | case id (u64)               | the case's latest alert count and times, when newer than `c/` (binary, `activity.rs`) |
//! | `a/`   | audit sequence (u64)        | the records one change appended, from that one on, up to 32 (one alone in older stores) |
//! | `x/`   | case id                     | the case's newest audit sequences (its open trail run) |
//! | `x/`   | case id, first sequence     | a sealed run of 32 of the case's audit sequences (empty: the key's one, as stored before runs) |
//! | `i/`   | format, 0x1f, source alert id | case id (u64)                |
//! | `g/`   | source, target, account, technique (0x1f between) | open case of the movement |
//! | `h/`   | source, target, account, protocol (0x1f between) | history (the source reached the target when a key with the pair's prefix exists) |
//! | `n/`   | source                      | distinct targets reached (u64) |
//! | `o/`   | outbox entry id             | outbox entry                   |
//! | `e/`   | effect sequence (u64)       | an effect waiting to be done   |
//! | `k/`   | case id (u64)               | where the case's card is       |
//! | `d/`   | second (u64), block (case id ÷ 64) | the block's cases due in that second: millisecond (u16) and place in the block (u8) of each (the deadline index, `case_blocks`) |
//! | `u/`   | case id, effect sequence    | the chat effects no chat service carried that one change kept, numbered from the key's (a single effect in older stores) |
//! | `r/`   | case id (u64)               | the case's card needs redrawing: version, urgency |
//! | `y/`   | directory source name       | the source's last good snapshot (JSON) |
//! | `q/`   | notice sequence (u64)       | a notice for the SOC channel, not about one case |
//! | `m/`   | `next_notice`               | the next notice's sequence (u64) |
//! | `l/`   | Discord id (u64)            | the person that Discord account is bound to |
//! | `w/`   | Discord id (u64)            | a link asked for, waiting on the person's push |
//! | `b/`   | vouch id (`A-12`, `D-3`)    | a vouch given in advance (standing approval, declaration) |
//! | `t/`   | account, source, target, 0x1f, vouch id | empty (vouches in advance by movement) |
//! | `m/`   | `next_approval`, `next_declaration` | the next standing approval's / declaration's number (u64) |
//! | `z/`   | Discord id (u64)            | a vouch in advance asked for (declaration, standing approval), waiting on the asker's push |
//! | `j/`   | case id (u64)               | the case's summary, as a listing shows it |
//! | `p/`   | 0 (unfinished) or 1 (finished), block (case id ÷ 64) | which of the block's 64 cases are (un)finished: a bitmap (u64, `case_blocks`) |
//! | `p/`   | 2, last change (u64 millis), case id | empty (finished cases by when they last changed) |
//! | `p/`   | 3, case id                  | empty (cases with an answer waiting on a push) |
//! | `f/`   | field tag, value, 0x1f, block (case id ÷ 64) | which of the block's 64 cases the value finds: a bitmap (u64; cases by source, target, account, rule) |
//! | `m/`   | `history_layout`            | the layout of the `h/` keys (a bare byte; the account led in 1) |
//! | `m/`   | `case_index`                | the version of the `j/`, `p/`, `f/` and `d/` indexes (built on open when absent or older; a bare byte) |
//! | `m/`   | `next_archive`              | the next archive run's number (u64) |
//! | `m/`   | `directory_version`         | directory snapshots written so far (u64) |
//! | `m/dictionary/` | family (a key's first byte), generation (u8) | a dictionary values of that family are compressed with (never changed) |

use vouch_playbook::CaseId;

use crate::{Result, StorageError};

pub(crate) const META_SCHEMA: &[u8] = b"m/schema";
pub(crate) const META_NEXT_CASE: &[u8] = b"m/next_case";
pub(crate) const META_AUDIT_HEAD: &[u8] = b"m/audit_head";
pub(crate) const META_NEXT_EFFECT: &[u8] = b"m/next_effect";
pub(crate) const EFFECT_PREFIX: &[u8] = b"e/";
pub(crate) const DEADLINE_PREFIX: &[u8] = b"d/";
pub(crate) const CASE_PREFIX: &[u8] = b"c/";
pub(crate) const AUDIT_PREFIX: &[u8] = b"a/";
pub(crate) const OUTBOX_PREFIX: &[u8] = b"o/";

fn with_prefix(prefix: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // Sized once: a new case builds a score of keys, each grown in steps before.
    let length = prefix.len() + parts.iter().map(|part| part.len() + 1).sum::<usize>();
    let mut key = Vec::with_capacity(length);
    key.extend_from_slice(prefix);
    for (index, part) in parts.iter().enumerate() {
        if index > 0 {
            key.push(0x1f);
        }
        key.extend_from_slice(part);
    }
    key
}

pub(crate) fn case(id: CaseId) -> Vec<u8> {
    with_prefix(CASE_PREFIX, &[&id.number().to_be_bytes()])
}

pub(crate) const CASE_SUMMARY_PREFIX: &[u8] = b"j/";
pub(crate) const META_CASE_INDEX: &[u8] = b"m/case_index";
/// The number of the next archive run (each run writes one file and one anchor).
pub(crate) const META_NEXT_ARCHIVE: &[u8] = b"m/next_archive";

/// A case's summary, for listings.
pub(crate) fn case_summary(id: CaseId) -> Vec<u8> {
    with_prefix(CASE_SUMMARY_PREFIX, &[&id.number().to_be_bytes()])
}

/// The prefix of the cases that are finished (or not).
pub(crate) fn case_by_finish_prefix(finished: bool) -> Vec<u8> {
    vec![b'p', b'/', u8::from(finished)]
}

/// The key of the block of cases (`case_blocks`) that holds `id` if it is finished (or not).
pub(crate) fn case_by_finish(finished: bool, id: CaseId) -> Vec<u8> {
    case_block(case_by_finish_prefix(finished), id)
}

/// A listing index's prefix followed by the block `id` falls in.
fn case_block(mut prefix: Vec<u8>, id: CaseId) -> Vec<u8> {
    prefix.extend_from_slice(&crate::case_blocks::block_of(id).to_be_bytes());
    prefix
}

/// Finished cases by when they last changed, oldest first (what retention reads): `p/`, 2, the
/// time (u64 millis), the case id.
pub(crate) const FINISHED_BY_QUIET_PREFIX: &[u8] = b"p/\x02";

pub(crate) fn finished_case_by_quiet(updated_at: vouch_playbook::Timestamp, id: CaseId) -> Vec<u8> {
    let mut key = finished_by_quiet_from(updated_at);
    key.extend_from_slice(&id.number().to_be_bytes());
    key
}

/// Where the finished cases that last changed at or after `at` begin.
pub(crate) fn finished_by_quiet_from(at: vouch_playbook::Timestamp) -> Vec<u8> {
    let mut key = FINISHED_BY_QUIET_PREFIX.to_vec();
    key.extend_from_slice(&(at.unix_millis().max(0) as u64).to_be_bytes());
    key
}

/// Cases with an answer waiting on a push (what the push worker resumes after a restart):
/// `p/`, 3, the case id.
pub(crate) const AWAITING_PUSH_PREFIX: &[u8] = b"p/\x03";

pub(crate) fn case_awaiting_push(id: CaseId) -> Vec<u8> {
    let mut key = AWAITING_PUSH_PREFIX.to_vec();
    key.extend_from_slice(&id.number().to_be_bytes());
    key
}

/// Where the listing keys by field begin.
pub(crate) const FIELD_PREFIX: &[u8] = b"f/";

/// The prefix of the cases found by one field's key (`f/`, tag, key, 0x1f).
pub(crate) fn case_by_field_prefix(field: vouch_playbook::case_list::ListedField, value: &str) -> Vec<u8> {
    let mut key = FIELD_PREFIX.to_vec();
    key.push(field.tag());
    key.extend(key_part_bytes(value));
    key.push(0x1f);
    key
}

/// The key of the block of cases (`case_blocks`) one field's value finds that holds `id`.
pub(crate) fn case_by_field(field: vouch_playbook::case_list::ListedField, value: &str, id: CaseId) -> Vec<u8> {
    case_block(case_by_field_prefix(field, value), id)
}

/// The case id a listing index key ends with.
pub(crate) fn case_id_at_end(key: &[u8], what: &str) -> Result<CaseId> {
    if key.len() < 8 {
        return Err(StorageError::Corrupt { key: what.to_string(), reason: format!("key of {} bytes", key.len()) });
    }
    decode_case_id(&key[key.len() - 8..], what)
}

/// What repeated alerts changed on a case since it was last written whole.
pub(crate) fn case_activity(id: CaseId) -> Vec<u8> {
    with_prefix(b"v/", &[&id.number().to_be_bytes()])
}

pub(crate) fn audit(seq: u64) -> Vec<u8> {
    with_prefix(AUDIT_PREFIX, &[&seq.to_be_bytes()])
}

/// A case's trail (see `trail`): the key of its open run, which every sealed run's key extends.
pub(crate) fn case_trail_open(id: CaseId) -> Vec<u8> {
    let mut key = b"x/".to_vec();
    key.extend_from_slice(&id.number().to_be_bytes());
    key
}

/// A sealed run of a case's trail, by the first sequence it holds (or, in the layout before
/// runs, one record's sequence).
pub(crate) fn case_trail_run(id: CaseId, first_seq: u64) -> Vec<u8> {
    let mut key = case_trail_open(id);
    key.extend_from_slice(&first_seq.to_be_bytes());
    key
}

pub(crate) fn seq_of_case_trail_run(key: &[u8]) -> Result<u64> {
    tail_u64(key, 2 + 8 + 8, "case trail run")
}

pub(crate) fn seq_of_audit(key: &[u8]) -> Result<u64> {
    tail_u64(key, 2 + 8, "audit key")
}

fn tail_u64(key: &[u8], expected_len: usize, what: &str) -> Result<u64> {
    if key.len() != expected_len {
        return Err(StorageError::Corrupt { key: what.to_string(), reason: format!("key of {} bytes", key.len()) });
    }
    decode_u64(&key[key.len() - 8..], what)
}

pub(crate) fn alert_id(format: &str, source_alert_id: &str) -> Vec<u8> {
    with_prefix(b"i/", &[format.as_bytes(), source_alert_id.as_bytes()])
}

/// A movement's open case: `g/`, then source, target, account and technique.
pub(crate) fn group(grouping: &vouch_playbook::GroupingKey) -> Vec<u8> {
    let parts = [&grouping.source, &grouping.target, &grouping.account, &grouping.technique].map(|part| key_part(part));
    with_prefix(b"g/", &[&parts[0], &parts[1], &parts[2], &parts[3]])
}

/// Where the movements' histories begin.
pub(crate) const HISTORY_PREFIX: &[u8] = b"h/";
/// The layout of the history keys (a bare byte): 2 put source and target first (before, the
/// account led, and a key of its own under `s/` said that a source had reached a target).
pub(crate) const META_HISTORY_LAYOUT: &[u8] = b"m/history_layout";

/// A movement's history: `h/`, then source, target, account and protocol. Source and target
/// lead so that the histories of one pair sit together, and one look at
/// [`history_of_pair_prefix`] tells whether the source ever reached that target.
pub(crate) fn history(movement: &vouch_playbook::model::MovementKey) -> Vec<u8> {
    let parts = [&movement.source, &movement.target, &movement.account].map(|part| key_part(part));
    with_prefix(HISTORY_PREFIX, &[&parts[0], &parts[1], &parts[2], movement.protocol.id().as_bytes()])
}

/// The prefix of every history from `source` to `target` (whatever the account and protocol).
pub(crate) fn history_of_pair_prefix(source: &str, target: &str) -> Vec<u8> {
    with_prefix(HISTORY_PREFIX, &[&key_part(source), &key_part(target), b""])
}

/// The history key a store of layout 1 used for the same movement (account, source, target,
/// protocol) turned into today's, or `None` when `key` is not one.
pub(crate) fn history_relaid(key: &[u8]) -> Option<Vec<u8>> {
    let parts: Vec<&[u8]> = key.strip_prefix(HISTORY_PREFIX)?.split(|byte| *byte == 0x1f).collect();
    let [account, source, target, protocol] = parts[..] else { return None };
    Some(with_prefix(HISTORY_PREFIX, &[source, target, account, protocol]))
}

/// A text as one part of a key: the separator it may hold becomes a space.
fn key_part(text: &str) -> Vec<u8> {
    key_part_bytes(text).collect()
}

fn key_part_bytes(text: &str) -> impl Iterator<Item = u8> + '_ {
    text.bytes().map(|byte| if byte == 0x1f { b' ' } else { byte })
}

/// How many distinct targets a source has reached.
pub(crate) fn source_count(source: &str) -> Vec<u8> {
    with_prefix(b"n/", &[source.as_bytes()])
}

/// Where the pairs a source reached were kept before history layout 2 (removed on open).
pub(crate) const OLD_SOURCE_TARGET_PREFIX: &[u8] = b"s/";

pub(crate) fn outbox(id: &str) -> Vec<u8> {
    with_prefix(OUTBOX_PREFIX, &[id.as_bytes()])
}

pub(crate) fn decode_u64(bytes: &[u8], what: &str) -> Result<u64> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| StorageError::Corrupt {
        key: what.to_string(),
        reason: format!("{} bytes, not 8", bytes.len()),
    })?;
    Ok(u64::from_be_bytes(array))
}

pub(crate) fn decode_case_id(bytes: &[u8], what: &str) -> Result<CaseId> {
    CaseId::new(decode_u64(bytes, what)?)
        .ok_or_else(|| StorageError::Corrupt { key: what.to_string(), reason: "case id zero".to_string() })
}

pub(crate) fn effect(seq: u64) -> Vec<u8> {
    with_prefix(EFFECT_PREFIX, &[&seq.to_be_bytes()])
}

pub(crate) fn seq_of_effect(key: &[u8]) -> Result<u64> {
    tail_u64(key, 2 + 8, "effect key")
}

pub(crate) fn card(id: CaseId) -> Vec<u8> {
    with_prefix(b"k/", &[&id.number().to_be_bytes()])
}

pub(crate) const REDRAW_PREFIX: &[u8] = b"r/";

pub(crate) fn redraw(id: CaseId) -> Vec<u8> {
    with_prefix(REDRAW_PREFIX, &[&id.number().to_be_bytes()])
}

pub(crate) fn undelivered_prefix(id: CaseId) -> Vec<u8> {
    with_prefix(b"u/", &[&id.number().to_be_bytes()])
}

pub(crate) fn undelivered(id: CaseId, seq: u64) -> Vec<u8> {
    let mut key = undelivered_prefix(id);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// A named point in time Vouch keeps across restarts (such as when the digest last went out).
pub(crate) const DIRECTORY_SNAPSHOT_PREFIX: &[u8] = b"y/";
pub(crate) const NOTICE_PREFIX: &[u8] = b"q/";
pub(crate) const ADVANCE_VOUCH_PREFIX: &[u8] = b"b/";
pub(crate) const ADVANCE_BY_MOVEMENT_PREFIX: &[u8] = b"t/";
pub(crate) const META_NEXT_APPROVAL: &[u8] = b"m/next_approval";
pub(crate) const META_NEXT_DECLARATION: &[u8] = b"m/next_declaration";

pub(crate) fn advance_vouch(id: &str) -> Vec<u8> {
    with_prefix(ADVANCE_VOUCH_PREFIX, &[id.as_bytes()])
}

/// The index prefix of the vouches given in advance for one account between two hosts.
pub(crate) fn advance_by_movement_prefix(hosts: &vouch_playbook::advance::HostsScope) -> Vec<u8> {
    let mut key = with_prefix(ADVANCE_BY_MOVEMENT_PREFIX, &[hosts.encode().as_bytes()]);
    key.push(0x1f);
    key
}

pub(crate) fn advance_by_movement(hosts: &vouch_playbook::advance::HostsScope, id: &str) -> Vec<u8> {
    let mut key = advance_by_movement_prefix(hosts);
    key.extend_from_slice(id.as_bytes());
    key
}

pub(crate) const PENDING_ADVANCE_PREFIX: &[u8] = b"z/";

pub(crate) fn pending_advance(discord_id: vouch_playbook::Snowflake) -> Vec<u8> {
    with_prefix(PENDING_ADVANCE_PREFIX, &[&discord_id.get().to_be_bytes()])
}

pub(crate) const IDENTITY_LINK_PREFIX: &[u8] = b"l/";
pub(crate) const PENDING_LINK_PREFIX: &[u8] = b"w/";

pub(crate) fn identity_link(discord_id: vouch_playbook::Snowflake) -> Vec<u8> {
    with_prefix(IDENTITY_LINK_PREFIX, &[&discord_id.get().to_be_bytes()])
}

pub(crate) fn pending_link(discord_id: vouch_playbook::Snowflake) -> Vec<u8> {
    with_prefix(PENDING_LINK_PREFIX, &[&discord_id.get().to_be_bytes()])
}
pub(crate) const META_NEXT_NOTICE: &[u8] = b"m/next_notice";
/// Counts the directory snapshots written, so replicas notice another one's sync or push.
pub(crate) const META_DIRECTORY_VERSION: &[u8] = b"m/directory_version";

pub(crate) fn notice(seq: u64) -> Vec<u8> {
    with_prefix(NOTICE_PREFIX, &[&seq.to_be_bytes()])
}

pub(crate) fn directory_snapshot(source: &str) -> Vec<u8> {
    with_prefix(DIRECTORY_SNAPSHOT_PREFIX, &[source.as_bytes()])
}

/// A dictionary of the values under keys starting with `family` (see `dictionary`).
pub(crate) fn dictionary(family: u8, generation: u8) -> Vec<u8> {
    with_prefix(b"m/dictionary/", &[&[family, generation]])
}

pub(crate) fn marker(name: &str) -> Vec<u8> {
    with_prefix(b"m/marker/", &[name.as_bytes()])
}

/// The key of the deadline bucket (`case_blocks`) holding case `id` falling due `at`.
pub(crate) fn deadline(at: vouch_playbook::Timestamp, id: CaseId) -> Vec<u8> {
    let (second, block) = crate::case_blocks::DeadlineBucket::key_parts(at, id);
    let mut key = DEADLINE_PREFIX.to_vec();
    key.extend_from_slice(&second.to_be_bytes());
    key.extend_from_slice(&block.to_be_bytes());
    key
}

/// Where the deadline buckets of the seconds after `at`'s begin.
pub(crate) fn deadlines_after_the_second_of(at: vouch_playbook::Timestamp) -> Vec<u8> {
    let mut key = DEADLINE_PREFIX.to_vec();
    key.extend_from_slice(&crate::case_blocks::second_of(at).saturating_add(1).to_be_bytes());
    key
}
