//! Given/when/then scenarios for every aggregate of the conference domain.

mod assignments;
mod conference;
mod order;
mod payment;
mod quotas;
mod registrant;
mod registration;
mod seats;
mod versions;
