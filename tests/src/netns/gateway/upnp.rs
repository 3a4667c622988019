//! The UPnP-IGD side of a lab router: it answers SSDP searches on its LAN with where its
//! description lies, serves that description and its WANIPConnection service's, and carries out
//! AddPortMapping, DeletePortMapping and GetExternalIPAddress (SOAP over HTTP), as a home
//! router's miniupnpd does.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::super::in_ns;
use super::{install, wan_of, State};

const SSDP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 255, 250), 1900);
const HTTP_PORT: u16 = 5000;
const SERVICE: &str = "urn:schemas-upnp-org:service:WANIPConnection:1";
/// The largest request read: SOAP bodies are a few hundred bytes.
const MAX_REQUEST: usize = 16 * 1024;

type Threads = Vec<JoinHandle<Result<(), String>>>;

pub(super) fn start(
    ns: &str,
    k: u8,
    state: &Arc<Mutex<State>>,
    stop: &Arc<AtomicBool>,
) -> Result<Threads, String> {
    let lan = Ipv4Addr::new(198, 18, k, 1);
    // The LAN is a bridge: without snooping it hands every multicast to the router itself.
    super::super::run(&format!(
        "ip -n {ns} link set lan type bridge mcast_snooping 0"
    ))?;
    let (ssdp, http) = in_ns(ns, move || {
        let ssdp = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, SSDP.port()))?;
        ssdp.join_multicast_v4(SSDP.ip(), &lan)?;
        ssdp.set_read_timeout(Some(Duration::from_millis(50)))?;
        let http = TcpListener::bind((lan, HTTP_PORT))?;
        http.set_nonblocking(true)?;
        Ok::<_, std::io::Error>((ssdp, http))
    })
    .join()
    .map_err(|_| "gateway thread".to_string())??
    .map_err(|e| format!("UPnP sockets: {e}"))?;
    let location = format!("http://{lan}:{HTTP_PORT}/rootDesc.xml");
    let searches = {
        let stop = stop.clone();
        std::thread::spawn(move || answer_searches(&ssdp, &location, &stop))
    };
    let control = {
        let (ns, state, stop) = (ns.to_owned(), state.clone(), stop.clone());
        std::thread::spawn(move || serve_http(&http, &ns, wan_of(k), &state, &stop))
    };
    Ok(vec![searches, control])
}

fn answer_searches(ssdp: &UdpSocket, location: &str, stop: &AtomicBool) -> Result<(), String> {
    let mut buf = [0u8; 1500];
    while !stop.load(Relaxed) {
        let Ok((n, from)) = ssdp.recv_from(&mut buf) else {
            continue;
        };
        if !buf[..n].starts_with(b"M-SEARCH") {
            continue;
        }
        let reply = format!(
            "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\n\
             ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\
             USN: uuid:00000000-0000-0000-0000-000000000001::\
             urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\
             EXT:\r\nSERVER: lab/1.0 UPnP/1.1\r\nLOCATION: {location}\r\n\r\n"
        );
        let _ = ssdp.send_to(reply.as_bytes(), from);
    }
    Ok(())
}

fn serve_http(
    http: &TcpListener,
    ns: &str,
    wan: Ipv4Addr,
    state: &Mutex<State>,
    stop: &AtomicBool,
) -> Result<(), String> {
    while !stop.load(Relaxed) {
        match http.accept() {
            Ok((conn, from)) => {
                let std::net::SocketAddr::V4(from) = from else {
                    continue;
                };
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let Some((path, action, body)) = read_request(&conn) else {
                    continue;
                };
                let (status, reply) = match path.as_str() {
                    "/rootDesc.xml" => (200, description()),
                    "/WANIPCn.xml" => (200, service_description()),
                    "/ctl/IPConn" => {
                        let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
                        let (status, reply, changed) =
                            control(&action, &body, *from.ip(), wan, &mut state);
                        if changed {
                            install(ns, wan, &state.mappings)?;
                        }
                        (status, reply)
                    }
                    _ => (404, String::new()),
                };
                respond(conn, status, &reply);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(format!("UPnP accept: {e}")),
        }
    }
    Ok(())
}

/// The request's path, its SOAP action (after the `#`), and its body.
fn read_request(conn: &TcpStream) -> Option<(String, String, String)> {
    let mut reader = BufReader::new(conn.take(MAX_REQUEST as u64));
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_owned();
    let (mut length, mut action) = (0, String::new());
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().ok()?,
            "soapaction" => {
                let v = value.trim().trim_matches('"');
                action = v.rsplit('#').next().unwrap_or_default().to_owned();
            }
            _ => {}
        }
    }
    let mut body = vec![0; length.min(MAX_REQUEST)];
    reader.read_exact(&mut body).ok()?;
    Some((path, action, String::from_utf8_lossy(&body).into_owned()))
}

fn respond(mut conn: TcpStream, status: u16, body: &str) {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        _ => "Internal Server Error",
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/xml; charset=\"utf-8\"\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Carries out one SOAP action from `client`: the HTTP status, the reply, and whether the
/// mappings changed.
fn control(
    action: &str,
    body: &str,
    client: Ipv4Addr,
    wan: Ipv4Addr,
    state: &mut State,
) -> (u16, String, bool) {
    let arg = |name: &str| {
        let open = format!("<{name}>");
        let start = body.find(&open)? + open.len();
        let len = body[start..].find("</")?;
        Some(body[start..start + len].trim().to_owned())
    };
    let port = |name: &str| arg(name).and_then(|v| v.parse::<u16>().ok());
    match action {
        "GetExternalIPAddress" => {
            let out = format!("<NewExternalIPAddress>{wan}</NewExternalIPAddress>");
            (200, envelope(action, &out), false)
        }
        "AddPortMapping" => {
            let (Some(ext), Some(int), Some(Ok(to))) = (
                port("NewExternalPort"),
                port("NewInternalPort"),
                arg("NewInternalClient").map(|c| c.parse::<Ipv4Addr>()),
            ) else {
                return (500, fault(402, "Invalid Args"), false);
            };
            if arg("NewProtocol").as_deref() != Some("UDP") {
                return (500, fault(402, "Invalid Args"), false);
            }
            // As miniupnpd: a studio maps only to itself.
            if to != client {
                return (500, fault(606, "Action not authorized"), false);
            }
            let sock = SocketAddrV4::new(to, int);
            match state.mappings.get(&ext) {
                Some(held) if *held != sock => (500, fault(718, "ConflictInMappingEntry"), false),
                held => {
                    let changed = held.is_none();
                    state.mappings.insert(ext, sock);
                    state.granted += 1;
                    (200, envelope(action, ""), changed)
                }
            }
        }
        "DeletePortMapping" => {
            let held =
                port("NewExternalPort").and_then(|ext| state.mappings.get(&ext).map(|s| (ext, *s)));
            match held {
                Some((ext, sock)) if *sock.ip() == client => {
                    state.mappings.remove(&ext);
                    state.deleted += 1;
                    (200, envelope(action, ""), true)
                }
                _ => (500, fault(714, "NoSuchEntryInArray"), false),
            }
        }
        _ => (500, fault(401, "Invalid Action"), false),
    }
}

fn envelope(action: &str, inner: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?>\r\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body>\
         <u:{action}Response xmlns:u=\"{SERVICE}\">{inner}</u:{action}Response>\
         </s:Body></s:Envelope>"
    )
}

fn fault(code: u16, what: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?>\r\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body><s:Fault>\
         <faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail>\
         <UPnPError xmlns=\"urn:schemas-upnp-org:control-1-0\"><errorCode>{code}</errorCode>\
         <errorDescription>{what}</errorDescription></UPnPError></detail></s:Fault>\
         </s:Body></s:Envelope>"
    )
}

fn description() -> String {
    let device = |kind: &str, inner: &str| {
        format!(
            "<device><deviceType>urn:schemas-upnp-org:device:{kind}:1</deviceType>{inner}</device>"
        )
    };
    let service = format!(
        "<serviceList><service><serviceType>{SERVICE}</serviceType>\
         <serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>\
         <controlURL>/ctl/IPConn</controlURL><eventSubURL>/evt/IPConn</eventSubURL>\
         <SCPDURL>/WANIPCn.xml</SCPDURL></service></serviceList>"
    );
    let connection = device("WANConnectionDevice", &service);
    let wan = device(
        "WANDevice",
        &format!("<deviceList>{connection}</deviceList>"),
    );
    let root = device(
        "InternetGatewayDevice",
        &format!("<deviceList>{wan}</deviceList>"),
    );
    format!(
        "<?xml version=\"1.0\"?>\r\n<root xmlns=\"urn:schemas-upnp-org:device-1-0\">\
         <specVersion><major>1</major><minor>0</minor></specVersion>{root}</root>"
    )
}

fn service_description() -> String {
    let action = |name: &str, inputs: &[&str], outputs: &[&str]| {
        let args: String = inputs
            .iter()
            .map(|a| (a, "in"))
            .chain(outputs.iter().map(|a| (a, "out")))
            .map(|(a, d)| {
                format!("<argument><name>{a}</name><direction>{d}</direction></argument>")
            })
            .collect();
        format!("<action><name>{name}</name><argumentList>{args}</argumentList></action>")
    };
    let actions = [
        action(
            "AddPortMapping",
            &[
                "NewRemoteHost",
                "NewExternalPort",
                "NewProtocol",
                "NewInternalPort",
                "NewInternalClient",
                "NewEnabled",
                "NewPortMappingDescription",
                "NewLeaseDuration",
            ],
            &[],
        ),
        action(
            "DeletePortMapping",
            &["NewRemoteHost", "NewExternalPort", "NewProtocol"],
            &[],
        ),
        action("GetExternalIPAddress", &[], &["NewExternalIPAddress"]),
    ]
    .concat();
    format!(
        "<?xml version=\"1.0\"?>\r\n<scpd xmlns=\"urn:schemas-upnp-org:service-1-0\">\
         <specVersion><major>1</major><minor>0</minor></specVersion>\
         <actionList>{actions}</actionList></scpd>"
    )
}
