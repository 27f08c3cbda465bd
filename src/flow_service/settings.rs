//! The service's record in localsettings: `/Settings/Devices/pzem_energy/ClassAndVrmInstance`
//! (`vebus:<n>` or `pzem_energy:<n>`) and `/Settings/Devices/pzem_energy/CustomName`
//! (venus-conventions.md §5).
//!
//! localsettings never calls its clients, so these calls may block (bounded by the client's
//! timeout) without the risk the [`crate::dbus::Follower`] avoids.

use std::time::Duration;

use crate::dbus::{Bus, BusClient, BusError, Event, SETTINGS_SERVICE, Setting, Value};
use crate::venus::settings::{Field, parse_class_text, parse_setting_path, setting_path};

use super::machine::{Record, SETTINGS_ID, SettingChange};

/// A connection to localsettings.
pub struct FlowSettings {
    client: BusClient,
}

impl FlowSettings {
    /// Connect and wait up to `wait` for localsettings; `Ok(None)` when it does not appear.
    pub fn connect(bus: &Bus, wait: Duration) -> Result<Option<FlowSettings>, BusError> {
        Ok(crate::dbus::connect_to_settings(bus, wait)?.map(|client| FlowSettings { client }))
    }

    /// The connection, to wait on.
    pub fn client(&self) -> &BusClient {
        &self.client
    }

    /// Make sure the record exists, asking for `class:instance` when it does not
    /// (localsettings moves a taken instance up, and keeps an existing record as it is),
    /// and return it.
    pub fn register(&mut self, class: &str, instance: i32) -> Result<Record, String> {
        let class_path = setting_path(SETTINGS_ID, Field::ClassAndVrmInstance);
        let settings = [
            Setting::new(class_path.as_str(), format!("{class}:{instance}")),
            Setting::new(setting_path(SETTINGS_ID, Field::CustomName), ""),
        ];
        let [class_text, custom_name] = self.client.add_setting_values(&settings)?;
        let (class, instance) = class_text
            .as_str()
            .and_then(parse_class_text)
            .ok_or_else(|| format!("{class_path} holds {class_text:?}, not <class>:<instance>"))?;
        Ok(Record {
            class: class.to_owned(),
            instance,
            custom_name: custom_name.as_str().unwrap_or("").to_owned(),
        })
    }

    /// Write `class:instance` and read back what localsettings kept.
    pub fn set_class(&mut self, class: &str, instance: i32) -> Result<(String, i32), String> {
        let path = setting_path(SETTINGS_ID, Field::ClassAndVrmInstance);
        let stored = self
            .client
            .store_and_read_setting(&path, &Value::Str(format!("{class}:{instance}")))?;
        stored
            .as_str()
            .and_then(parse_class_text)
            .map(|(c, n)| (c.to_owned(), n))
            .ok_or_else(|| format!("{path} holds {stored:?}, not <class>:<instance>"))
    }

    /// Store the custom name.
    pub fn store_custom_name(&mut self, name: &str) -> Result<(), String> {
        self.client
            .store_setting(&setting_path(SETTINGS_ID, Field::CustomName), &Value::from(name))
    }

    /// Changes of the record that arrived, without blocking. `Err`: the bus connection is
    /// gone.
    pub fn changes(&mut self, scratch: &mut Vec<Event>, out: &mut Vec<SettingChange>) -> Result<(), BusError> {
        scratch.clear();
        self.client.poll_events(scratch)?;
        for event in scratch.drain(..) {
            let Event::PropertiesChanged { service, path, value } = event else {
                continue;
            };
            if service != SETTINGS_SERVICE {
                continue;
            }
            let text = || value.as_str().unwrap_or("").to_owned();
            match parse_setting_path(&path) {
                Some((SETTINGS_ID, Field::ClassAndVrmInstance)) => out.push(SettingChange::ClassAndVrmInstance(text())),
                Some((SETTINGS_ID, Field::CustomName)) => out.push(SettingChange::CustomName(text())),
                _ => {}
            }
        }
        Ok(())
    }
}
