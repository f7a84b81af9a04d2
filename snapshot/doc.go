// Package snapshot defines squib's snapshot files and reads and writes them.
// It is pure Go and knows nothing of hypervisors: the VMM fills a State and
// hands over guest RAM; a restore gets them back.
//
// A snapshot is two files, specified in docs/snapshot-format.md:
//
//   - The state file: a fixed 24-byte prefix (magic "SQUIB-ST", format
//     version, body length, CRC-32C of the prefix), a deterministic CBOR body
//     (a Header, then the Machine: configuration, vCPUs, GIC, devices), and a
//     CRC-64/ECMA of everything before it.
//   - The memory file: the guest RAM image at offset 0, sparse (blocks of
//     zeros are holes), then a block table (which blocks hold data, and a
//     CRC-32C of each) and a small footer carrying the file's own random ID.
//     The state file names that ID and the size, so a state file paired with
//     another memory file is refused. A full memory file maps directly as
//     guest RAM (MapMemory: MAP_PRIVATE, lazy, copy-on-write), at a cost that
//     does not grow with the RAM size.
//
// A diff snapshot's memory file holds only the blocks dirtied since its
// parent, at their offsets; Merge folds diffs into their base, and Load with
// LoadMemory restores a chain directly.
//
// Files appear atomically: each is written under a temporary name, synced,
// and renamed only when every file of the snapshot is complete.
//
// Reading treats files as untrusted: size caps, one strict CBOR decoding mode,
// checks of every field a restore relies on. Problems are reported as
// *FormatError values wrapping one sentinel error per class (ErrTruncated,
// ErrChecksum, ErrVersion, ...). The checksums detect accidents, not
// attacks: anyone who can write a snapshot can recompute them.
package snapshot
