//! localsettings (`com.victronenergy.settings`, venus-conventions.md §5): its names and
//! the bulk `AddSettings` call. Everything else (`GetValue`, `SetValue`, change signals)
//! is the plain BusItem API of [`BusClient`].

use dbus::Message;
use dbus::arg::{ArgType, Iter, IterAppend};

use super::client::BusClient;
use super::error::BusError;
use super::value::Value;
use super::wire::{ASV, ENTRY_SV, append_entry, for_each_entry};

/// The localsettings service.
pub const SETTINGS_SERVICE: &str = "com.victronenergy.settings";
/// The interface of localsettings' management methods (`AddSettings`…).
pub const SETTINGS_IFACE: &str = "com.victronenergy.Settings";

/// One entry of a bulk `AddSettings` request.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    /// Full path, e.g. `/Settings/Devices/pzem_x/ClassAndVrmInstance` (called on `/`).
    pub path: String,
    /// Default; its kind decides the setting's type (int, float or string: §5).
    pub default: Value,
    /// Lower limit (`None`: no limit).
    pub min: Option<Value>,
    /// Upper limit (`None`: no limit).
    pub max: Option<Value>,
    /// Changes are not logged by localsettings.
    pub silent: bool,
}

impl Setting {
    /// A setting with no limits, not silent.
    pub fn new(path: impl Into<String>, default: impl Into<Value>) -> Setting {
        Setting {
            path: path.into(),
            default: default.into(),
            min: None,
            max: None,
            silent: false,
        }
    }
}

/// The answer for one [`Setting`].
#[derive(Debug, Clone, PartialEq)]
pub struct SettingResult {
    /// The path, as echoed by localsettings.
    pub path: String,
    /// 0 when the setting exists now; negative codes as listed in §5.
    pub error: i32,
    /// The stored (or allocated) value when `error` is 0.
    pub value: Option<Value>,
}

impl SettingResult {
    /// The value stored, or why there is none (localsettings refused the setting, or
    /// answered without a value).
    pub fn value(&self) -> Result<Value, String> {
        if self.error != 0 {
            return Err(format!("AddSettings refused {} with error {}", self.path, self.error));
        }
        self.value
            .clone()
            .ok_or_else(|| format!("AddSettings gave no value for {}", self.path))
    }
}

/// A new connection that has waited up to `wait` for localsettings to appear and follows
/// its signals; `Ok(None)` when it did not appear (velib's SettingsDevice waits the same way).
pub fn connect_to_settings(bus: &super::Bus, wait: std::time::Duration) -> Result<Option<BusClient>, BusError> {
    let mut client = BusClient::new(bus)?;
    match client.wait_for_name(SETTINGS_SERVICE, wait) {
        Ok(()) => {}
        Err(BusError::Timeout(_)) => return Ok(None),
        Err(e) => return Err(e),
    }
    client.subscribe_service(SETTINGS_SERVICE)?;
    Ok(Some(client))
}

impl BusClient {
    /// Bulk `AddSettings` on `/` of localsettings (§5). One result per setting, in order.
    /// [`BusError::BadReply`] when the answer is not `aa{sv}` or a result lacks its integer
    /// `error` or string `path`.
    pub fn add_settings(&mut self, settings: &[Setting]) -> Result<Vec<SettingResult>, BusError> {
        let mut msg = Message::new_method_call(SETTINGS_SERVICE, "/", SETTINGS_IFACE, "AddSettings")
            .map_err(|e| BusError::BadName(e.to_string()))?;
        append_settings(&mut IterAppend::new(&mut msg), settings);
        let reply = self.call(msg)?;
        read_setting_results(&mut reply.iter_init()).map_err(|e| BusError::BadReply(format!("AddSettings: {e}")))
    }

    /// [`BusClient::add_settings`] and the value of each, in order: `Err` with the reason
    /// when the call failed, a setting was refused or has no value, or results are missing.
    pub fn add_setting_values<const N: usize>(&mut self, settings: &[Setting; N]) -> Result<[Value; N], String> {
        let results = self
            .add_settings(settings)
            .map_err(|e| format!("AddSettings failed: {e}"))?;
        let values: Vec<Value> = results
            .iter()
            .take(N)
            .map(SettingResult::value)
            .collect::<Result<_, _>>()?;
        values
            .try_into()
            .map_err(|_| "AddSettings returned too few results".to_string())
    }

    /// `SetValue` of one localsettings path; `Err` when the call fails or localsettings
    /// refuses the value.
    pub fn store_setting(&mut self, path: &str, value: &Value) -> Result<(), String> {
        match self.set_value(SETTINGS_SERVICE, path, value) {
            Ok(0) => Ok(()),
            Ok(code) => Err(format!("localsettings refused {path} (code {code})")),
            Err(e) => Err(format!("{path}: {e}")),
        }
    }

    /// [`BusClient::store_setting`], then what localsettings kept (it may change the value,
    /// e.g. move a taken device instance up).
    pub fn store_and_read_setting(&mut self, path: &str, value: &Value) -> Result<Value, String> {
        self.store_setting(path, value)?;
        self.get_value(SETTINGS_SERVICE, path)
            .map_err(|e| format!("{path}: {e}"))
    }
}

/// Appends `aa{sv}` for `AddSettings`.
pub(crate) fn append_settings(ia: &mut IterAppend, settings: &[Setting]) {
    ia.append_array(&ASV, |a| {
        for s in settings {
            a.append_array(&ENTRY_SV, |d| {
                append_entry(d, "path", &Value::Str(s.path.clone()));
                append_entry(d, "default", &s.default);
                for (key, limit) in [("min", &s.min), ("max", &s.max)] {
                    if let Some(v) = limit {
                        append_entry(d, key, v);
                    }
                }
                if s.silent {
                    append_entry(d, "silent", &Value::Int(1));
                }
            });
        }
    });
}

/// Reads the `aa{sv}` answer of `AddSettings`, one [`SettingResult`] per dict.
///
/// localsettings puts an integer `error` and the string `path` in every result. A result
/// without them (or with other types) is not guessed at: the whole answer is `Err` with
/// the reason, since taking a missing `error` for 0 would report success for a setting
/// that may not exist. A `value` of an unsupported type reads as `None`.
pub(crate) fn read_setting_results(it: &mut Iter) -> Result<Vec<SettingResult>, String> {
    const SHAPE: &str = "expected aa{sv}";
    let mut list = it.recurse(ArgType::Array).ok_or(SHAPE)?;
    let mut out = Vec::new();
    loop {
        match list.arg_type() {
            ArgType::Invalid => return Ok(out),
            ArgType::Array => {
                let (mut path, mut error, mut value) = (None, None, None);
                for_each_entry(&mut list, |key, v| {
                    let slot = match key {
                        "path" => &mut path,
                        "error" => &mut error,
                        "value" => &mut value,
                        _ => return Some(()),
                    };
                    *slot = Value::read_variant(v)
                        .map_err(|e| log::debug!("AddSettings result {key}: {e}"))
                        .ok();
                    Some(())
                })
                .ok_or(SHAPE)?;
                let n = out.len();
                let Some(Value::Str(path)) = path else {
                    return Err(format!("result {n} has no string 'path'"));
                };
                let error = error
                    .as_ref()
                    .and_then(Value::as_i64)
                    .and_then(|e| i32::try_from(e).ok())
                    .ok_or_else(|| format!("result {n} ({path}) has no integer 'error'"))?;
                out.push(SettingResult { path, error, value });
            }
            _ => return Err(SHAPE.into()),
        }
        list.next();
    }
}
