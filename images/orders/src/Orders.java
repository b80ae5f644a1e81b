// The orders service (Socks-Shop shape): places orders into PostgreSQL.
//
// Twelve-factor: configured only from its environment, logs one line per request to stdout,
// keeps no state of its own (PostgreSQL is the attached backing service), disposable: SIGTERM
// stops taking requests and finishes those in flight. The JDK's own HTTP server
// (com.sun.net.httpserver) and plain JDBC (Debian's libpostgresql-jdbc-java); nothing else.
//
// Where the database is: ORDERS_DB_FILE, a properties file (host=, port=) that autopilot
// renders from the catalog (the PostgreSQL primary) and replaces atomically on a failover;
// it is re-read when it changes. Without it, the standard PGHOST/PGPORT. PGUSER, PGPASSWORD,
// PGDATABASE as libpq reads them.
//
//   GET  /health          {"status":"ok",...} (no database call: a database outage must not
//                         make the orchestrator kill every orders instance)
//   POST /orders          {"id": "...", "customer": "...", "items": [...], "total": 12.5}
//                         -> 201 once committed; the id is the client's idempotency key:
//                         the same id again -> 200 with the stored order, never a duplicate
//   GET  /orders/{id}     the order, or 404
//   GET  /orders?customer=c  that customer's orders
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.BasicFileAttributes;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.Properties;
import java.util.concurrent.Executors;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

public final class Orders {
    static final Pattern ID = Pattern.compile("^[A-Za-z0-9._-]{1,64}$");
    static final String SCHEMA = "CREATE TABLE IF NOT EXISTS orders ("
            + "id text PRIMARY KEY, customer text NOT NULL, body text NOT NULL,"
            + " created timestamptz NOT NULL DEFAULT now())";

    final String dbFile;
    final String user;
    final String password;
    final String database;
    final int timeout;
    String fileStamp = "";
    String host;
    int port;
    volatile boolean schemaReady;

    Orders() {
        dbFile = env("ORDERS_DB_FILE", "");
        host = env("PGHOST", "127.0.0.1");
        port = Integer.parseInt(env("PGPORT", "5432"));
        user = env("PGUSER", "postgres");
        password = env("PGPASSWORD", "");
        database = env("PGDATABASE", "postgres");
        timeout = Integer.parseInt(env("ORDERS_DB_TIMEOUT", "2"));
    }

    static String env(String name, String def) {
        String v = System.getenv(name);
        return v == null || v.isEmpty() ? def : v;
    }

    static void log(String line) {
        System.out.println(line);
        System.out.flush();
    }

    /** The primary's address: the rendered file when it exists and changed, else PG*. */
    synchronized String[] target() {
        if (!dbFile.isEmpty()) {
            Path p = Path.of(dbFile);
            try {
                BasicFileAttributes a = Files.readAttributes(p, BasicFileAttributes.class);
                String stamp = a.fileKey() + "/" + a.lastModifiedTime() + "/" + a.size();
                if (!stamp.equals(fileStamp)) {
                    Properties props = new Properties();
                    try (InputStream in = Files.newInputStream(p)) {
                        props.load(in);
                    }
                    String h = props.getProperty("host", "").trim();
                    if (!h.isEmpty()) {
                        host = h;
                        port = Integer.parseInt(props.getProperty("port", "5432").trim());
                        log("orders: database is " + host + ":" + port + " (from " + dbFile + ")");
                    }
                    fileStamp = stamp;
                }
            } catch (IOException | NumberFormatException e) {
                // no file yet (nothing rendered): keep what we have
            }
        }
        return new String[] {host, Integer.toString(port)};
    }

    Connection connect() throws SQLException {
        String[] t = target();
        Properties p = new Properties();
        p.setProperty("user", user);
        p.setProperty("password", password);
        p.setProperty("connectTimeout", Integer.toString(timeout));
        p.setProperty("socketTimeout", Integer.toString(timeout * 3));
        // a read-only standby must refuse, not silently accept: we want the primary
        p.setProperty("targetServerType", "primary");
        Connection c = DriverManager.getConnection(
                "jdbc:postgresql://" + t[0] + ":" + t[1] + "/" + database, p);
        if (!schemaReady) {
            try (PreparedStatement s = c.prepareStatement(SCHEMA)) {
                s.execute();
            }
            schemaReady = true;
        }
        return c;
    }

    // -- a tiny JSON vocabulary: the JDK has no JSON parser, and the body is stored as is --
    static String quote(String s) {
        StringBuilder b = new StringBuilder("\"");
        for (char ch : s.toCharArray()) {
            switch (ch) {
                case '"': b.append("\\\""); break;
                case '\\': b.append("\\\\"); break;
                case '\n': b.append("\\n"); break;
                default:
                    if (ch < 0x20) b.append(String.format("\\u%04x", (int) ch));
                    else b.append(ch);
            }
        }
        return b.append('"').toString();
    }

    static String field(String json, String name) {
        Matcher m = Pattern.compile("\"" + name + "\"\\s*:\\s*\"([^\"\\\\]{1,256})\"").matcher(json);
        return m.find() ? m.group(1) : null;
    }

    static void reply(HttpExchange ex, int status, String body, long started) throws IOException {
        byte[] data = (body + "\n").getBytes(StandardCharsets.UTF_8);
        ex.getResponseHeaders().set("Content-Type", "application/json");
        ex.sendResponseHeaders(status, data.length);
        try (OutputStream out = ex.getResponseBody()) {
            out.write(data);
        }
        log(ex.getRequestMethod() + " " + ex.getRequestURI() + " " + status + " "
                + String.format("%.1fms", (System.nanoTime() - started) / 1e6));
    }

    void handle(HttpExchange ex) throws IOException {
        long started = System.nanoTime();
        try {
            String path = ex.getRequestURI().getPath();
            String method = ex.getRequestMethod();
            if (path.equals("/health")) {
                reply(ex, 200, "{\"status\":\"ok\",\"service\":\"orders\"}", started);
            } else if (path.equals("/orders") && method.equals("POST")) {
                String body = new String(ex.getRequestBody().readNBytes(65536),
                        StandardCharsets.UTF_8);
                place(ex, body, started);
            } else if (path.equals("/orders") && method.equals("GET")) {
                String q = ex.getRequestURI().getRawQuery();
                String customer = q != null && q.startsWith("customer=")
                        ? URLDecoder.decode(q.substring(9), StandardCharsets.UTF_8) : null;
                list(ex, customer, started);
            } else if (path.startsWith("/orders/") && method.equals("GET")) {
                get(ex, path.substring(8), started);
            } else {
                reply(ex, 404, "{\"error\":" + quote("no route " + method + " " + path) + "}",
                        started);
            }
        } catch (SQLException e) {
            reply(ex, 503, "{\"error\":" + quote("database unavailable: " + e.getMessage())
                    + "}", started);
        } catch (RuntimeException e) {
            reply(ex, 500, "{\"error\":" + quote(e.toString()) + "}", started);
        } finally {
            ex.close();
        }
    }

    void place(HttpExchange ex, String body, long started) throws IOException, SQLException {
        String id = field(body, "id");
        String customer = field(body, "customer");
        if (id == null || !ID.matcher(id).matches() || customer == null) {
            reply(ex, 400, "{\"error\":\"an order needs an \\\"id\\\" ([A-Za-z0-9._-]{1,64}) "
                    + "and a \\\"customer\\\"\"}", started);
            return;
        }
        try (Connection c = connect();
             PreparedStatement s = c.prepareStatement(
                     "INSERT INTO orders (id, customer, body) VALUES (?, ?, ?) "
                     + "ON CONFLICT (id) DO NOTHING")) {
            s.setString(1, id);
            s.setString(2, customer);
            s.setString(3, body.trim());
            int inserted = s.executeUpdate(); // autocommit: acknowledged = committed
            reply(ex, inserted == 1 ? 201 : 200, stored(c, id), started);
        }
    }

    static String stored(Connection c, String id) throws SQLException {
        try (PreparedStatement s = c.prepareStatement(
                "SELECT body FROM orders WHERE id = ?")) {
            s.setString(1, id);
            try (ResultSet r = s.executeQuery()) {
                return r.next() ? r.getString(1) : null;
            }
        }
    }

    void get(HttpExchange ex, String id, long started) throws IOException, SQLException {
        try (Connection c = connect()) {
            String body = stored(c, id);
            if (body == null) {
                reply(ex, 404, "{\"error\":" + quote("no order " + id) + "}", started);
            } else {
                reply(ex, 200, body, started);
            }
        }
    }

    void list(HttpExchange ex, String customer, long started) throws IOException, SQLException {
        StringBuilder b = new StringBuilder("{\"orders\":[");
        try (Connection c = connect();
             PreparedStatement s = c.prepareStatement(customer == null
                     ? "SELECT body FROM orders ORDER BY created, id"
                     : "SELECT body FROM orders WHERE customer = ? ORDER BY created, id")) {
            if (customer != null) {
                s.setString(1, customer);
            }
            try (ResultSet r = s.executeQuery()) {
                boolean first = true;
                while (r.next()) {
                    b.append(first ? "" : ",").append(r.getString(1));
                    first = false;
                }
            }
        }
        reply(ex, 200, b.append("]}").toString(), started);
    }

    public static void main(String[] args) throws IOException {
        Orders orders = new Orders();
        int port = Integer.parseInt(env("PORT", "8080"));
        HttpServer server = HttpServer.create(
                new InetSocketAddress(env("BIND", "0.0.0.0"), port), 128);
        server.createContext("/", orders::handle);
        server.setExecutor(Executors.newFixedThreadPool(
                Integer.parseInt(env("ORDERS_THREADS", "8"))));
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            server.stop(Integer.parseInt(env("ORDERS_DRAIN_SECONDS", "3")));
            log("orders: stopped");
        }));
        server.start();
        log("orders: listening on " + port);
    }
}
