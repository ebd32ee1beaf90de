extension AdminPages {
    /// The admin pages' CSS, inline in each page (the CSP allows inline styles
    /// and nothing external).
    static let styleSheet = """
      body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #222; }
      nav a { margin-right: 1rem; } h1 { font-size: 1.3rem; } h2 { font-size: 1.1rem; margin-top: 1.5rem; }
      table { border-collapse: collapse; } td, th { border: 1px solid #ddd; padding: .25rem .5rem; text-align: left; vertical-align: top; }
      th { background: #f4f4f4; } .kv th { width: 11rem; } .muted { color: #777; } .err { color: #b00; } .ok { color: #070; }
      form { display: grid; gap: .5rem; max-width: 36rem; } form label { display: grid; gap: .2rem; }
      textarea { font-family: ui-monospace, monospace; } tr.in td:nth-child(2) { color: #05a; } tr.out td:nth-child(2) { color: #a50; }
      #tap td:nth-child(2), #tap td:first-child { white-space: nowrap; }
      #tap td:last-child { font-family: ui-monospace, monospace; white-space: pre-wrap; word-break: break-all; max-width: 40rem; }
    """
}
