package dev.ripstream.compat;

import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.security.KeyStore;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;

import com.sun.net.httpserver.HttpsConfigurator;
import com.sun.net.httpserver.HttpsServer;

/**
 * STS GetCallerIdentity over HTTPS, answering with Ripstream's account (000000000000). The KPL
 * (0.15) asks STS for the account to build the stream's ARN before it sends anything, and Ripstream
 * serves no STS, so the test stands in for it.
 */
public final class FakeSts implements AutoCloseable {
    private final HttpsServer http;
    public final AtomicInteger calls = new AtomicInteger();

    public FakeSts(Path dir) throws Exception {
        Path ks = dir.resolve("sts.p12");
        Process p = new ProcessBuilder(List.of("keytool", "-genkeypair", "-keyalg", "RSA", "-keysize", "2048",
                "-alias", "sts", "-dname", "CN=localhost", "-ext", "SAN=DNS:localhost,IP:127.0.0.1",
                "-validity", "2", "-storetype", "PKCS12", "-keystore", ks.toString(),
                "-storepass", "changeit", "-keypass", "changeit"))
                .redirectErrorStream(true).redirectOutput(dir.resolve("keytool.log").toFile()).start();
        if (!p.waitFor(60, TimeUnit.SECONDS) || p.exitValue() != 0) {
            throw new IOException("keytool failed");
        }
        KeyStore store = KeyStore.getInstance("PKCS12");
        try (InputStream in = new FileInputStream(ks.toFile())) {
            store.load(in, "changeit".toCharArray());
        }
        KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
        kmf.init(store, "changeit".toCharArray());
        SSLContext ssl = SSLContext.getInstance("TLS");
        ssl.init(kmf.getKeyManagers(), null, null);
        http = HttpsServer.create(new InetSocketAddress("127.0.0.1", 0), 16);
        http.setHttpsConfigurator(new HttpsConfigurator(ssl));
        http.createContext("/", ex -> {
            ex.getRequestBody().readAllBytes();
            calls.incrementAndGet();
            byte[] body = ("<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"
                    + "<GetCallerIdentityResult><Arn>arn:aws:iam::000000000000:user/kpl</Arn>"
                    + "<UserId>AIDAKPL</UserId><Account>000000000000</Account></GetCallerIdentityResult>"
                    + "<ResponseMetadata><RequestId>00000000-0000-0000-0000-000000000000</RequestId>"
                    + "</ResponseMetadata></GetCallerIdentityResponse>").getBytes(StandardCharsets.UTF_8);
            ex.getResponseHeaders().add("Content-Type", "text/xml");
            ex.sendResponseHeaders(200, body.length);
            try (OutputStream out = ex.getResponseBody()) {
                out.write(body);
            }
        });
        http.start();
    }

    public int port() {
        return http.getAddress().getPort();
    }

    @Override
    public void close() {
        http.stop(0);
    }
}
