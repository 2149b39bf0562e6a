package compat

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/smithy-go"
)

const principals = `
[[principal]]
name = "admin"
access_key_id = "AKIDCOMPATGOADMIN001"
secret_access_key = "compat-go-admin-secret"

[[principal]]
name = "writer"
access_key_id = "AKIDCOMPATGOWRITER01"
secret_access_key = "compat-go-writer-secret"
policy = '''{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["kinesis:PutRecord*", "kinesis:Describe*", "kinesis:List*"], "Resource": "*"}]}'''
`

// The keys come from a shared credentials file and profile, as applications
// deployed against AWS load them; the server verifies every signature.
const sharedCredentials = `
[ripstream-admin]
aws_access_key_id = AKIDCOMPATGOADMIN001
aws_secret_access_key = compat-go-admin-secret

[ripstream-writer]
aws_access_key_id = AKIDCOMPATGOWRITER01
aws_secret_access_key = compat-go-writer-secret

[wrong-secret]
aws_access_key_id = AKIDCOMPATGOADMIN001
aws_secret_access_key = not-the-secret

[unknown-key]
aws_access_key_id = AKIDNOBODYKNOWS00001
aws_secret_access_key = whatever
`

func TestSigV4WithCredentialsFile(t *testing.T) {
	dir := t.TempDir()
	creds := filepath.Join(dir, "principals.toml")
	if err := os.WriteFile(creds, []byte(principals), 0o600); err != nil {
		t.Fatal(err)
	}
	profiles := filepath.Join(dir, "credentials")
	if err := os.WriteFile(profiles, []byte(sharedCredentials), 0o600); err != nil {
		t.Fatal(err)
	}
	// Environment keys would take precedence over the profile.
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_PROFILE", "")
	s := startTestServer(t, "--credentials", creds)

	client := func(profile string) (*kinesis.Client, *dynamodb.Client) {
		cfg := awsConfig(t, "", "",
			config.WithSharedCredentialsFiles([]string{profiles}),
			config.WithSharedConfigFiles([]string{filepath.Join(dir, "no-config")}),
			config.WithSharedConfigProfile(profile))
		return kinesis.NewFromConfig(cfg, func(o *kinesis.Options) { o.BaseEndpoint = aws.String(s.URL) }),
			dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) { o.BaseEndpoint = aws.String(s.URL) })
	}
	admin, adminDynamo := client("ripstream-admin")

	// Signed control and data plane, and a signed event stream request.
	t.Run("admin", func(t *testing.T) {
		subscribeAndReceive(t, admin)
	})

	t.Run("admin DynamoDB", func(t *testing.T) {
		name := uniqueName("go-signed")
		_, err := adminDynamo.CreateTable(ctx(t), &dynamodb.CreateTableInput{
			TableName:            aws.String(name),
			AttributeDefinitions: []ddbtypes.AttributeDefinition{{AttributeName: aws.String("leaseKey"), AttributeType: ddbtypes.ScalarAttributeTypeS}},
			KeySchema:            []ddbtypes.KeySchemaElement{{AttributeName: aws.String("leaseKey"), KeyType: ddbtypes.KeyTypeHash}},
			BillingMode:          ddbtypes.BillingModePayPerRequest,
		})
		if err != nil {
			t.Fatalf("signed CreateTable: %v", err)
		}
		if _, err := adminDynamo.DeleteTable(ctx(t), &dynamodb.DeleteTableInput{TableName: aws.String(name)}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("policy denies", func(t *testing.T) {
		writer, _ := client("ripstream-writer")
		_, err := writer.CreateStream(ctx(t), &kinesis.CreateStreamInput{StreamName: aws.String(uniqueName("denied")), ShardCount: aws.Int32(1)})
		var denied *types.AccessDeniedException
		if !errors.As(err, &denied) {
			t.Fatalf("writer's CreateStream: %T %v", err, err)
		}
		if _, err := writer.ListStreams(ctx(t), &kinesis.ListStreamsInput{}); err != nil {
			t.Fatalf("writer's ListStreams: %v", err)
		}
	})

	expectCode := func(t *testing.T, c *kinesis.Client, code string) {
		t.Helper()
		_, err := c.ListStreams(ctx(t), &kinesis.ListStreamsInput{})
		var api smithy.APIError
		if !errors.As(err, &api) || api.ErrorCode() != code {
			t.Fatalf("want %s, got %T %v", code, err, err)
		}
	}
	t.Run("wrong secret", func(t *testing.T) {
		c, _ := client("wrong-secret")
		expectCode(t, c, "InvalidSignatureException")
	})
	t.Run("unknown key", func(t *testing.T) {
		c, _ := client("unknown-key")
		expectCode(t, c, "UnrecognizedClientException")
	})
	t.Run("unsigned", func(t *testing.T) {
		cfg := awsConfig(t, "", "", config.WithCredentialsProvider(aws.AnonymousCredentials{}))
		c := kinesis.NewFromConfig(cfg, func(o *kinesis.Options) { o.BaseEndpoint = aws.String(s.URL) })
		expectCode(t, c, "MissingAuthenticationTokenException")
	})
	t.Run("wrong region", func(t *testing.T) {
		cfg := awsConfig(t, "AKIDCOMPATGOADMIN001", "compat-go-admin-secret", config.WithRegion("eu-west-1"))
		c := kinesis.NewFromConfig(cfg, func(o *kinesis.Options) { o.BaseEndpoint = aws.String(s.URL) })
		expectCode(t, c, "InvalidSignatureException")
	})
}
