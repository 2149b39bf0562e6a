package dev.ripstream.compat;

import java.io.BufferedReader;
import java.io.File;
import java.io.IOException;
import java.io.InputStreamReader;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

/**
 * The real ripstream binary ($RIPSTREAM_BIN) on 127.0.0.1 with an ephemeral port and a temporary
 * data directory. Its first stdout line holds the URL. Close it (try-with-resources or @AfterAll);
 * a shutdown hook stops it too if the JVM exits first. compat/flink compiles this file on its own
 * (with nothing else from this suite): it uses only the JDK.
 */
public final class RipstreamServer implements AutoCloseable {
    public final URI url;
    public final Path dir;
    public final Path log;
    private final Process proc;
    private final Thread hook;
    /** Whether close() leaves the directory (and the data in it) for a later server. */
    private final boolean keep;

    private RipstreamServer(URI url, Path dir, Path log, Process proc, Thread hook, boolean keep) {
        this.url = url;
        this.dir = dir;
        this.log = log;
        this.proc = proc;
        this.hook = hook;
        this.keep = keep;
    }

    public static RipstreamServer start() throws IOException {
        return start(false);
    }

    /** With tls, a fresh self-signed certificate for localhost / 127.0.0.1 (made with openssl). */
    public static RipstreamServer start(boolean tls, String... extra) throws IOException {
        return startIn(Files.createTempDirectory("ripstream-java-"), tls, false, extra);
    }

    /** The ripstream binary under test. */
    public static String binary() {
        String bin = System.getenv("RIPSTREAM_BIN");
        if (bin == null || bin.isEmpty()) {
            bin = Path.of("..", "..", "target", "debug", "ripstream").toAbsolutePath().normalize().toString();
        }
        return bin;
    }

    /**
     * A server whose data directory is {@code dir/data}; with keep, close() leaves it so another server
     * (in another JVM, say) can start on the same data.
     */
    public static RipstreamServer startIn(Path dir, boolean tls, boolean keep, String... extra) throws IOException {
        String bin = binary();
        Files.createDirectories(dir);
        Path log = dir.resolve("server.log");
        List<String> cmd = new ArrayList<>(List.of(bin, "serve", "--listen", "127.0.0.1:0",
                "--data-dir", dir.resolve("data").toString()));
        if (tls) {
            Path cert = dir.resolve("cert.pem");
            Path key = dir.resolve("key.pem");
            run(List.of("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", key.toString(), "-out", cert.toString(), "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"), dir.resolve("openssl.log"));
            cmd.addAll(List.of("--tls-cert", cert.toString(), "--tls-key", key.toString()));
        }
        cmd.addAll(List.of(extra));
        Process proc = new ProcessBuilder(cmd)
                .redirectError(log.toFile())
                .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")))
                .start();
        Thread hook = new Thread(proc::destroyForcibly);
        Runtime.getRuntime().addShutdownHook(hook);
        BufferedReader out = new BufferedReader(new InputStreamReader(proc.getInputStream(), StandardCharsets.UTF_8));
        String line = out.readLine();
        if (line == null || !line.contains("://")) {
            proc.destroyForcibly();
            throw new IOException("server did not start (" + line + "): " + Files.readString(log));
        }
        String[] words = line.trim().split(" ");
        URI url = URI.create(words[words.length - 1]);
        // Keep draining stdout so the server never blocks on the pipe.
        Thread drain = new Thread(() -> {
            try {
                while (out.readLine() != null) {
                    // discard
                }
            } catch (IOException ignored) {
                // the server exited
            }
        }, "ripstream-stdout");
        drain.setDaemon(true);
        drain.start();
        return new RipstreamServer(url, dir, log, proc, hook, keep);
    }

    private static void run(List<String> cmd, Path log) throws IOException {
        try {
            Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile()).start();
            if (!p.waitFor(60, TimeUnit.SECONDS) || p.exitValue() != 0) {
                throw new IOException(cmd + " failed: " + Files.readString(log));
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException(e);
        }
    }

    /** The server's log so far (stderr), for assertion messages. */
    public String logText() {
        try {
            return Files.readString(log);
        } catch (IOException e) {
            return "<" + e + ">";
        }
    }

    @Override
    public void close() {
        proc.destroy();
        try {
            if (!proc.waitFor(30, TimeUnit.SECONDS)) {
                proc.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
            }
        } catch (InterruptedException e) {
            proc.destroyForcibly();
            Thread.currentThread().interrupt();
        }
        try {
            Runtime.getRuntime().removeShutdownHook(hook);
        } catch (IllegalStateException ignored) {
            // already shutting down
        }
        if (keep) {
            return;
        }
        if (System.getenv("RIPSTREAM_KEEP_LOGS") != null) {
            System.err.println("server log kept in " + log);
            return;
        }
        try (Stream<Path> paths = Files.walk(dir)) {
            paths.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        } catch (IOException ignored) {
            // best effort
        }
    }
}
