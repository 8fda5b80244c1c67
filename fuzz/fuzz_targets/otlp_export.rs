//! The OTLP receiver's decoding and mapping never panic on any body, in either encoding, and
//! every event a mapped span gives is one JSON object. The first byte picks the encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcplog::otlp::{self, Encoding, Mapped};

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let encoding = if first % 2 == 0 {
        Encoding::Protobuf
    } else {
        Encoding::Json
    };
    let body = bytes::Bytes::copy_from_slice(body);
    let Ok(export) = otlp::split(&body, encoding) else {
        return;
    };
    for resource in &export.resources {
        let service = resource.service_name().ok().flatten();
        for raw in &resource.spans {
            let Ok(span) = raw.decode() else { continue };
            if let Ok(Mapped::ToolCall(events)) = otlp::map_span(&span, service.as_deref().or(Some("m"))) {
                for event in events {
                    let parsed: serde_json::Value =
                        serde_json::from_str(&event.body).expect("a mapped event is JSON");
                    assert!(parsed.is_object());
                    let _ = mcplog::event::validate(&event.body);
                }
            }
        }
    }
});
