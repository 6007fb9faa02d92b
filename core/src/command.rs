//! Inbound commands: a fixed 64-byte, plain-old-data record.
//!
//! Commands travel through the inbound ring and into the journal as these exact bytes
//! (little-endian on every platform Tickwire supports). Every field is an integer, so any bit
//! pattern is a valid `Command`; meaning is checked by the engine, which answers a bad field with
//! a `Rejected` event, never a panic.

use crate::types::*;

wire_enum! {
    /// What a command asks for.
    CommandKind {
        /// Enter a new order.
        New = 1,
        /// Cancel a resting order by (account, client order id).
        Cancel = 2,
        /// Change a resting order's price and/or open quantity.
        Replace = 3,
        /// Cancel every resting order of an account (optionally of one instrument).
        MassCancel = 4,
        /// Halt an instrument: new orders and replaces are rejected, cancels still work.
        Halt = 5,
        /// Resume a halted instrument.
        Resume = 6,
    }
}

/// `flags` bit: `price` carries a value (limit price, replace price or market protection price).
pub const CMD_HAS_PRICE: u16 = 1;

/// One inbound command. Layout (offsets in bytes): seq 0, ts_ns 8, kind 16, side 17,
/// order_type 18, stp 19, instrument 20, account 24, flags 28, reason 30, order_id 32,
/// price 40, qty 48, reserved 56.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Command {
    /// Command sequence, assigned by the sequencer (the inbound ring); gapless from 1.
    pub seq: Seq,
    /// Ingress timestamp (ns, producer's clock). The engine copies it into market data; it never
    /// reads a clock itself.
    pub ts_ns: u64,
    /// [`CommandKind`] wire value.
    pub kind: u8,
    /// [`Side`] wire value (New).
    pub side: u8,
    /// [`OrderType`] wire value (New).
    pub order_type: u8,
    /// [`StpMode`] wire value, or 0 for the account's default (New).
    pub stp: u8,
    /// Instrument id; 0 in a MassCancel means every instrument.
    pub instrument: InstrumentId,
    /// Account the command acts for (MassCancel: whose orders).
    pub account: AccountId,
    /// Bit set: [`CMD_HAS_PRICE`].
    pub flags: u16,
    /// [`CancelReason`] wire value for a MassCancel (0 = `MassCancel`).
    pub reason: u8,
    /// Reserved, zero.
    pub _pad: u8,
    /// Client order id (New, Cancel, Replace).
    pub order_id: ClientOrderId,
    /// Price when `flags & CMD_HAS_PRICE`.
    pub price: Price,
    /// Quantity (New: order quantity; Replace: the new open quantity).
    pub qty: Qty,
    /// Reserved, zero.
    pub _reserved: u64,
}

const _: () = assert!(core::mem::size_of::<Command>() == 64);

impl Command {
    /// A new order. `price` is the limit (or a market order's protection price; `None` = no
    /// protection). `stp` `None` means the account's default mode.
    #[allow(clippy::too_many_arguments)]
    pub fn new_order(
        account: AccountId,
        instrument: InstrumentId,
        order_id: ClientOrderId,
        side: Side,
        order_type: OrderType,
        price: Option<Price>,
        qty: Qty,
        stp: Option<StpMode>,
    ) -> Command {
        Command {
            kind: CommandKind::New as u8,
            side: side as u8,
            order_type: order_type as u8,
            stp: stp.map_or(0, |m| m as u8),
            instrument,
            account,
            flags: if price.is_some() { CMD_HAS_PRICE } else { 0 },
            order_id,
            price: price.unwrap_or(0),
            qty,
            ..Command::default()
        }
    }

    /// Cancel a resting order.
    pub fn cancel(account: AccountId, instrument: InstrumentId, order_id: ClientOrderId) -> Command {
        Command { kind: CommandKind::Cancel as u8, instrument, account, order_id, ..Command::default() }
    }

    /// Replace: `qty` is the new open quantity; `price` `None` keeps the price.
    pub fn replace(
        account: AccountId,
        instrument: InstrumentId,
        order_id: ClientOrderId,
        price: Option<Price>,
        qty: Qty,
    ) -> Command {
        Command {
            kind: CommandKind::Replace as u8,
            instrument,
            account,
            flags: if price.is_some() { CMD_HAS_PRICE } else { 0 },
            order_id,
            price: price.unwrap_or(0),
            qty,
            ..Command::default()
        }
    }

    /// Cancel all of an account's resting orders, of one instrument or (`None`) of all.
    pub fn mass_cancel(account: AccountId, instrument: Option<InstrumentId>, reason: CancelReason) -> Command {
        Command {
            kind: CommandKind::MassCancel as u8,
            instrument: instrument.unwrap_or(0),
            account,
            reason: reason as u8,
            ..Command::default()
        }
    }

    /// Halt (`true`) or resume (`false`) an instrument.
    pub fn set_halted(instrument: InstrumentId, halted: bool) -> Command {
        let kind = if halted { CommandKind::Halt } else { CommandKind::Resume };
        Command { kind: kind as u8, instrument, ..Command::default() }
    }

    /// Returns the command with `seq` and `ts_ns` set.
    pub fn with_seq(mut self, seq: Seq, ts_ns: u64) -> Command {
        self.seq = seq;
        self.ts_ns = ts_ns;
        self
    }

    /// The price, if the command carries one.
    #[inline]
    pub fn price(&self) -> Option<Price> {
        (self.flags & CMD_HAS_PRICE != 0).then_some(self.price)
    }

    /// The command's bytes (its wire and journal form).
    #[inline]
    pub fn as_bytes(&self) -> &[u8; 64] {
        // SAFETY: Command is repr(C), 64 bytes (checked at compile time), made only of integer
        // fields with no padding between them (offsets listed in the type's doc), so every byte
        // is initialised and the reference lives as long as `self`.
        unsafe { &*(self as *const Command as *const [u8; 64]) }
    }

    /// Reads a command from its 64 bytes. Any bytes give a `Command`; the engine validates it.
    #[inline]
    pub fn from_bytes(b: &[u8; 64]) -> Command {
        // SAFETY: every bit pattern is a valid Command (integer fields only); read_unaligned
        // copes with any alignment of `b`.
        unsafe { core::ptr::read_unaligned(b.as_ptr() as *const Command) }
    }
}

// SAFETY: Command is repr(C), integer fields only, no padding: any bit pattern is valid.
unsafe impl crate::ring::Pod for Command {}
