//! The console's pages: HTML, CSS and JavaScript embedded in the binary (the gate may be offline: no external fonts,
//! scripts or CDNs). Server-rendered shells; a little JavaScript keeps the panel live over server-sent events.

const CSS: &str = include_str!("assets/console.css");
const CONSOLE_JS: &str = include_str!("assets/console.js");
const LOGIN_JS: &str = include_str!("assets/login.js");
const CONSOLE_HTML: &str = include_str!("assets/console.html");

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn shell(title: &str, body: &str, script: &str) -> String {
    format!(
        "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1, maximum-scale=1\">\
         <title>{title}</title><style>{CSS}</style></head><body>{body}<script>{script}</script></body></html>"
    )
}

/// The login page: pick your name, type your PIN on a large keypad.
pub fn login(operators: &[(&str, &str)]) -> String {
    let options: String = operators
        .iter()
        .map(|(id, name)| format!("<option value=\"{}\">{} ({})</option>", esc(id), esc(name), esc(id)))
        .collect();
    let keys: String = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "清除", "0", "←"]
        .iter()
        .map(|k| format!("<button type=\"button\" class=\"key\" data-key=\"{k}\">{k}</button>"))
        .collect();
    let body = format!(
        "<main class=\"login\"><h1>四必 · 闸口值守登录</h1>\
         <label>工号<select id=\"operator\">{options}</select></label>\
         <label>PIN<input id=\"pin\" type=\"password\" inputmode=\"numeric\" autocomplete=\"off\" maxlength=\"12\"></label>\
         <div class=\"keypad\">{keys}</div>\
         <button id=\"login\" class=\"big primary\">登录</button>\
         <p id=\"login-error\" class=\"error\" role=\"alert\"></p></main>"
    );
    shell("登录 · 四必闸口", &body, LOGIN_JS)
}

/// The console page.
pub fn console(simulator: bool) -> String {
    let body = CONSOLE_HTML.replace("<!--SIM-->", if simulator { SIM } else { "" });
    shell("闸口值守 · 四必", &body, CONSOLE_JS)
}

/// The simulated devices' controls (demo and tests only).
const SIM: &str = "<details id=\"sim\" class=\"sim\"><summary>模拟设备</summary>\
    <button class=\"simbtn\" data-sim='{\"credential\":{\"key\":\"demo-pass\",\"identity\":\"pass\",\"category\":\"resident\",\"holder\":\"王小华\"}}'>出示居民通行证</button>\
    <button class=\"simbtn\" data-sim='{\"credential\":{\"key\":\"demo-green\",\"identity\":\"health_code\",\"category\":\"visitor\",\"code\":\"green\"}}'>出示绿码</button>\
    <button class=\"simbtn\" data-sim='{\"credential\":{\"key\":\"demo-red\",\"identity\":\"health_code\",\"category\":\"visitor\",\"code\":\"red\"}}'>出示红码</button>\
    <button class=\"simbtn\" data-sim='{\"card\":{\"name\":\"赵秀兰\",\"sex\":\"2\",\"nation\":\"01\",\"birth\":\"19460307\",\"address\":\"示范市示范区示范路1号6栋102\",\"id\":\"11010119460307002\",\"valid_from\":\"20160101\",\"valid_to\":\"长期\"}}'>刷身份证（居民）</button>\
    <button class=\"simbtn\" data-sim='{\"card\":{\"name\":\"周建国\",\"sex\":\"1\",\"nation\":\"01\",\"birth\":\"19780512\",\"address\":\"外市某区某路8号\",\"id\":\"11010119780512001\",\"valid_from\":\"20180101\",\"valid_to\":\"20380101\"}}'>刷身份证（访客）</button>\
    <button class=\"simbtn\" data-sim='{\"temperature\":36.5}'>测温 36.5</button>\
    <button class=\"simbtn\" data-sim='{\"temperature\":38.2}'>测温 38.2</button></details>";
