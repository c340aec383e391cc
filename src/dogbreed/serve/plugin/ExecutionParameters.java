package dogbreed.plugin;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.Locale;
import software.amazon.ai.mms.servingsdk.Context;
import software.amazon.ai.mms.servingsdk.ModelServerEndpoint;
import software.amazon.ai.mms.servingsdk.annotations.Endpoint;
import software.amazon.ai.mms.servingsdk.annotations.helpers.EndpointTypes;
import software.amazon.ai.mms.servingsdk.http.Request;
import software.amazon.ai.mms.servingsdk.http.Response;

/**
 * GET /execution-parameters on the inference address: what SageMaker Batch Transform
 * asks the container before a job (the job's own values still win).
 *
 * <p>The answer fits the server as `dogbreed serve` started it: one concurrent
 * transform per model worker (SAGEMAKER_MODEL_SERVER_WORKERS), and the request size
 * limit the workers enforce (DOGBREED_MAX_PAYLOAD_MB, in whole MB, 1 to 100: the range
 * a job's MaxPayloadInMB takes; 0 there means "no limit", which we never claim).
 * Both variables are in the front end's environment because `dogbreed serve` writes
 * every serving setting out for it and its workers.
 */
@Endpoint(
        urlPattern = "execution-parameters",
        endpointType = EndpointTypes.INFERENCE,
        description = "Batch Transform execution parameters")
public final class ExecutionParameters extends ModelServerEndpoint {

    static final int MAX_PAYLOAD_CAP_MB = 100;

    private final byte[] answer;

    public ExecutionParameters() {
        int workers = workers(System.getenv("SAGEMAKER_MODEL_SERVER_WORKERS"));
        int payload = payloadMb(System.getenv("DOGBREED_MAX_PAYLOAD_MB"));
        answer = String.format(
                        Locale.ROOT,
                        "{\"MaxConcurrentTransforms\": %d, \"BatchStrategy\": \"MULTI_RECORD\", "
                                + "\"MaxPayloadInMB\": %d}",
                        workers,
                        payload)
                .getBytes(StandardCharsets.UTF_8);
    }

    static int workers(String text) {
        try {
            return Math.max(1, Integer.parseInt(text.trim()));
        } catch (RuntimeException e) { // unset or malformed: `serve` always sets it
            return 1;
        }
    }

    static int payloadMb(String text) {
        double mb;
        try {
            mb = Double.parseDouble(text.trim());
        } catch (RuntimeException e) {
            mb = 6; // the endpoint's default limit
        }
        if (Double.isNaN(mb)) {
            mb = 6;
        }
        // Whole MB, never above what the workers take (a 6.5 MB limit answers 6).
        return (int) Math.max(1, Math.min(MAX_PAYLOAD_CAP_MB, Math.floor(mb)));
    }

    @Override
    public void doGet(Request req, Response rsp, Context ctx) throws IOException {
        rsp.setStatus(200, "OK");
        rsp.setContentType("application/json");
        rsp.getOutputStream().write(answer);
    }

    @Override
    public void doPost(Request req, Response rsp, Context ctx) throws IOException {
        notAllowed(rsp);
    }

    @Override
    public void doPut(Request req, Response rsp, Context ctx) throws IOException {
        notAllowed(rsp);
    }

    @Override
    public void doDelete(Request req, Response rsp, Context ctx) throws IOException {
        notAllowed(rsp);
    }

    private static void notAllowed(Response rsp) throws IOException {
        rsp.setStatus(405, "Method Not Allowed");
        rsp.setHeader("Allow", "GET");
        rsp.setContentType("application/json");
        rsp.getOutputStream()
                .write(
                        "{\"error\": \"/execution-parameters takes GET only\"}"
                                .getBytes(StandardCharsets.UTF_8));
    }
}
