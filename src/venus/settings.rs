//! A meter's record in localsettings: class and device instance, custom
//! name and position, under `/Settings/Devices/<id>/` (venus-conventions §5).

use std::time::Duration;

use crate::dbus::SETTINGS_SERVICE;
use crate::dbus::{Bus, BusClient, BusError, Event, Setting, Value};

use super::role::{PositionKind, Role};

/// The instance meters ask for (dbus-modbus-client's choice for meters).
pub const PREFERRED_INSTANCE: i32 = 40;

/// What localsettings holds for one meter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRecord {
    /// Class from `ClassAndVrmInstance`.
    pub role: Role,
    /// Instance from `ClassAndVrmInstance`.
    pub instance: i32,
    /// `CustomName`.
    pub custom_name: String,
    /// `Position`.
    pub position: i32,
}

/// A setting of some meter changed in localsettings.
#[derive(Clone, Debug, PartialEq)]
pub struct SettingChange {
    /// The meter's settings id (`/Settings/Devices/<id>/…`).
    pub id: String,
    /// Which setting.
    pub field: Field,
    /// The new value.
    pub value: Value,
}

/// The per-meter settings this driver keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// `ClassAndVrmInstance`.
    ClassAndVrmInstance,
    /// `CustomName`.
    CustomName,
    /// `Position`.
    Position,
}

impl Field {
    /// Every field.
    pub const ALL: [Field; 3] = [Field::ClassAndVrmInstance, Field::CustomName, Field::Position];

    /// The setting's name, the last element of its path.
    pub fn name(self) -> &'static str {
        match self {
            Field::ClassAndVrmInstance => "ClassAndVrmInstance",
            Field::CustomName => "CustomName",
            Field::Position => "Position",
        }
    }
}

/// Full settings path of a meter's setting.
pub fn setting_path(id: &str, field: Field) -> String {
    format!("/Settings/Devices/{id}/{}", field.name())
}

/// The settings id and field of a path [`setting_path`] makes; `None` for any other path.
pub fn parse_setting_path(path: &str) -> Option<(&str, Field)> {
    let (id, name) = path.strip_prefix("/Settings/Devices/")?.split_once('/')?;
    Field::ALL.into_iter().find(|f| f.name() == name).map(|f| (id, f))
}

/// Parse the text of any `ClassAndVrmInstance` setting, `<class>:<instance>` (any class:
/// `vebus:277` too); `None` unless the instance is a number.
pub fn parse_class_text(text: &str) -> Option<(&str, i32)> {
    let (class, n) = text.split_once(':')?;
    Some((class.trim(), n.trim().parse().ok()?))
}

/// The value of a `ClassAndVrmInstance` setting: `grid:41`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassAndInstance {
    /// The class, as one of our roles.
    pub role: Role,
    /// The device instance.
    pub instance: i32,
}

impl ClassAndInstance {
    /// Parse `<class>:<instance>`; `None` unless the class is one of our
    /// roles and the instance a number.
    pub fn parse(text: &str) -> Option<ClassAndInstance> {
        let (class, instance) = parse_class_text(text)?;
        Some(ClassAndInstance {
            role: class.parse().ok()?,
            instance,
        })
    }
}

impl std::fmt::Display for ClassAndInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.role.class(), self.instance)
    }
}

/// A connection to localsettings.
pub struct SettingsLink {
    client: BusClient,
}

impl SettingsLink {
    /// Connect and wait up to `wait` for localsettings to appear.
    /// `Ok(None)` when it does not.
    pub fn connect(bus: &Bus, wait: Duration) -> Result<Option<SettingsLink>, BusError> {
        Ok(crate::dbus::connect_to_settings(bus, wait)?.map(|client| SettingsLink { client }))
    }

    /// The connection, to wait on.
    pub fn client(&self) -> &BusClient {
        &self.client
    }

    /// Make sure the meter's settings exist (bulk `AddSettings`; existing
    /// values are kept, a taken instance is moved up by localsettings) and
    /// return them. A stored class that is not one of `allowed` is replaced
    /// by `default_role`.
    pub fn register(&mut self, id: &str, default_role: Role, allowed: &[Role]) -> Result<DeviceRecord, String> {
        let default_class = ClassAndInstance {
            role: default_role,
            instance: PREFERRED_INSTANCE,
        }
        .to_string();
        let mut position = Setting::new(setting_path(id, Field::Position), 0i64);
        position.min = Some(Value::Int(0));
        position.max = Some(Value::Int(i64::from(PositionKind::MAX_OF_ANY)));
        let settings = [
            Setting::new(setting_path(id, Field::ClassAndVrmInstance), default_class.as_str()),
            Setting::new(setting_path(id, Field::CustomName), ""),
            position,
        ];
        let [class_text, custom_name, position] = self.client.add_setting_values(&settings)?;
        let custom_name = custom_name.as_str().unwrap_or("").to_string();
        let position = position
            .as_i64()
            .unwrap_or(0)
            .clamp(0, i64::from(PositionKind::MAX_OF_ANY)) as i32;
        let stored = class_text.as_str().and_then(ClassAndInstance::parse);
        let class = match stored {
            Some(c) if allowed.contains(&c.role) => c,
            _ => {
                log::warn!("{id}: stored class {class_text:?} does not fit this meter; using {default_role}");
                let instance = stored.map_or(PREFERRED_INSTANCE, |c| c.instance);
                self.set_class(
                    id,
                    ClassAndInstance {
                        role: default_role,
                        instance,
                    },
                )?
            }
        };
        Ok(DeviceRecord {
            role: class.role,
            instance: class.instance,
            custom_name,
            position,
        })
    }

    /// Write `<role>:<instance>` and read back what localsettings kept (it
    /// moves a taken instance to a free one).
    pub fn set_class(&mut self, id: &str, class: ClassAndInstance) -> Result<ClassAndInstance, String> {
        let path = setting_path(id, Field::ClassAndVrmInstance);
        let stored = self
            .client
            .store_and_read_setting(&path, &Value::Str(class.to_string()))?;
        stored
            .as_str()
            .and_then(ClassAndInstance::parse)
            .ok_or_else(|| format!("{path} holds {stored:?}, not <class>:<instance>"))
    }

    /// Store one setting of a meter.
    pub fn store(&mut self, id: &str, field: Field, value: &Value) -> Result<(), String> {
        self.client.store_setting(&setting_path(id, field), value)
    }

    /// Changes of meters' settings that arrived, without blocking. Errors
    /// mean the bus connection is gone.
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
            let Some((id, field)) = parse_setting_path(&path) else {
                continue;
            };
            out.push(SettingChange {
                id: id.to_string(),
                field,
                value,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_and_instance_text() {
        let c = |role, instance| Some(ClassAndInstance { role, instance });
        assert_eq!(ClassAndInstance::parse("grid:41"), c(Role::Grid, 41));
        assert_eq!(ClassAndInstance::parse("dcload: 40"), c(Role::DcLoad, 40));
        assert_eq!(ClassAndInstance::parse("grid"), None);
        assert_eq!(ClassAndInstance::parse("grid:x"), None);
        assert_eq!(ClassAndInstance::parse("battery:1"), None, "not one of our roles");
        assert_eq!(c(Role::AcLoad, 42).unwrap().to_string(), "acload:42");
        assert_eq!(
            setting_path("pzem_a_1", Field::Position),
            "/Settings/Devices/pzem_a_1/Position"
        );
        assert_eq!(parse_class_text("vebus: 277"), Some(("vebus", 277)));
        assert_eq!(parse_class_text("vebus"), None);
        for field in Field::ALL {
            assert_eq!(
                parse_setting_path(&setting_path("pzem_a_1", field)),
                Some(("pzem_a_1", field))
            );
        }
        assert_eq!(parse_setting_path("/Settings/Devices/pzem_a_1/Other"), None);
        assert_eq!(parse_setting_path("/Settings/Other/pzem_a_1/Position"), None);
    }
}
