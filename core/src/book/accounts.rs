//! Accounts that hold resting orders: default STP mode and the list of their orders in order of
//! first acceptance (for mass cancel). Entries are never removed; capacity fixed at start-up.

use super::store::NIL;
use crate::types::*;

/// One account.
#[derive(Clone, Copy, Debug)]
pub struct AccountState {
    /// Account id.
    pub account: AccountId,
    /// Configured default STP mode, if any.
    pub stp_default: Option<StpMode>,
    /// First and last order slot of the account's list.
    pub head: u32,
    /// See `head`.
    pub tail: u32,
}

/// Open-addressing map account → dense entry index.
pub struct AccountTable {
    buckets: Vec<u32>,
    mask: usize,
    entries: Vec<AccountState>,
}

#[inline]
fn home(account: AccountId, mask: usize) -> usize {
    ((account as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & mask
}

impl AccountTable {
    /// A table for up to `accounts_max` accounts.
    pub fn new(accounts_max: u32) -> AccountTable {
        let n = (accounts_max as usize * 2).next_power_of_two().max(8);
        AccountTable { buckets: vec![NIL; n], mask: n - 1, entries: Vec::with_capacity(accounts_max as usize) }
    }

    /// Bytes allocated.
    pub fn memory_bytes(&self) -> usize {
        self.buckets.len() * 4 + self.entries.capacity() * core::mem::size_of::<AccountState>()
    }

    /// Entry index of an account.
    #[inline]
    pub fn find(&self, account: AccountId) -> Option<u32> {
        let mut i = home(account, self.mask);
        for _ in 0..self.buckets.len() {
            let e = self.buckets[i];
            if e == NIL {
                return None;
            }
            if self.entries[e as usize].account == account {
                return Some(e);
            }
            i = (i + 1) & self.mask;
        }
        None
    }

    /// Accounts in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = &AccountState> {
        self.entries.iter()
    }

    /// Whether a new account can be added.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.entries.len() == self.entries.capacity()
    }

    /// Entry index of an account, adding it if new; `None` when new and the table is full.
    #[inline]
    pub fn find_or_insert(&mut self, account: AccountId) -> Option<u32> {
        let mut i = home(account, self.mask);
        for _ in 0..self.buckets.len() {
            let e = self.buckets[i];
            if e == NIL {
                if self.is_full() {
                    return None;
                }
                let idx = self.entries.len() as u32;
                self.entries.push(AccountState { account, stp_default: None, head: NIL, tail: NIL });
                self.buckets[i] = idx;
                return Some(idx);
            }
            if self.entries[e as usize].account == account {
                return Some(e);
            }
            i = (i + 1) & self.mask;
        }
        None
    }
}

impl core::ops::Index<u32> for AccountTable {
    type Output = AccountState;
    #[inline]
    fn index(&self, i: u32) -> &AccountState {
        &self.entries[i as usize]
    }
}

impl core::ops::IndexMut<u32> for AccountTable {
    #[inline]
    fn index_mut(&mut self, i: u32) -> &mut AccountState {
        &mut self.entries[i as usize]
    }
}
