//! The service's record in localsettings: `/Settings/Devices/pzem_energy/ClassAndVrmInstance`
//! (`vebus:<n>` or `pzem_energy:<n>`) and `/Settings/Devices/pzem_energy/CustomName`
//! (venus-conventions.md §5).
//!
//! localsettings never calls its clients, so these calls may block (bounded by the client's
//! timeout) without the risk the [`crate::dbus::Follower`] avoids.

use std::time::Duration;

use crate::dbus::{Bus, BusClient, BusError, Event, SETTINGS_SERVICE, Setting, Value};

use super::machine::{Record, SETTINGS_ID, SettingChange, parse_class_and_instance};

/// `ClassAndVrmInstance` of the service.
pub fn class_path() -> String {
    format!("/Settings/Devices/{SETTINGS_ID}/ClassAndVrmInstance")
}

/// `CustomName` of the service.
pub fn custom_name_path() -> String {
    format!("/Settings/Devices/{SETTINGS_ID}/CustomName")
}

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
        let settings = [
            Setting::new(class_path(), format!("{class}:{instance}")),
            Setting::new(custom_name_path(), ""),
        ];
        let results = self
            .client
            .add_settings(&settings)
            .map_err(|e| format!("AddSettings failed: {e}"))?;
        let value = |i: usize| -> Result<Value, String> {
            let r = results.get(i).ok_or("AddSettings returned too few results")?;
            if r.error != 0 {
                return Err(format!("AddSettings refused {} with error {}", r.path, r.error));
            }
            r.value
                .clone()
                .ok_or_else(|| format!("AddSettings gave no value for {}", r.path))
        };
        let class_text = value(0)?;
        let custom_name = value(1)?.as_str().unwrap_or("").to_owned();
        let (class, instance) = class_text
            .as_str()
            .and_then(parse_class_and_instance)
            .ok_or_else(|| format!("{} holds {class_text:?}, not <class>:<instance>", class_path()))?;
        Ok(Record {
            class: class.to_owned(),
            instance,
            custom_name,
        })
    }

    /// Write `class:instance` and read back what localsettings kept.
    pub fn set_class(&mut self, class: &str, instance: i32) -> Result<(String, i32), String> {
        let path = class_path();
        let code = self
            .client
            .set_value(SETTINGS_SERVICE, &path, &Value::Str(format!("{class}:{instance}")))
            .map_err(|e| e.to_string())?;
        if code != 0 {
            return Err(format!("localsettings refused {path} (code {code})"));
        }
        let stored = self
            .client
            .get_value(SETTINGS_SERVICE, &path)
            .map_err(|e| e.to_string())?;
        stored
            .as_str()
            .and_then(parse_class_and_instance)
            .map(|(c, n)| (c.to_owned(), n))
            .ok_or_else(|| format!("{path} holds {stored:?}, not <class>:<instance>"))
    }

    /// Store the custom name.
    pub fn store_custom_name(&mut self, name: &str) -> Result<(), String> {
        let path = custom_name_path();
        match self.client.set_value(SETTINGS_SERVICE, &path, &Value::from(name)) {
            Ok(0) => Ok(()),
            Ok(code) => Err(format!("localsettings refused {path} (code {code})")),
            Err(e) => Err(format!("{path}: {e}")),
        }
    }

    /// Changes of the record that arrived, without blocking. `Err`: the bus connection is
    /// gone.
    pub fn changes(&mut self, scratch: &mut Vec<Event>, out: &mut Vec<SettingChange>) -> Result<(), BusError> {
        scratch.clear();
        self.client.poll_events(scratch)?;
        let (class, custom) = (class_path(), custom_name_path());
        for event in scratch.drain(..) {
            let Event::PropertiesChanged { service, path, value } = event else {
                continue;
            };
            if service != SETTINGS_SERVICE {
                continue;
            }
            let text = value.as_str().unwrap_or("").to_owned();
            if path == class {
                out.push(SettingChange::ClassAndVrmInstance(text));
            } else if path == custom {
                out.push(SettingChange::CustomName(text));
            }
        }
        Ok(())
    }
}
